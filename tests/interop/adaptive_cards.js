// Validates Adaptive Cards with Microsoft's `adaptivecards` package (the renderer's own
// parser): every card in the JSON array file given as argv[2] must parse as version 1.5
// with no serialization events and no validation events.
// Prints one PASS/FAIL line per card; exits 1 if any failed.
"use strict";

const fs = require("fs");
const AC = require("adaptivecards/dist/adaptivecards.js");

const cards = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
let failed = 0;
cards.forEach((entry, i) => {
  const label = `${entry.label || "card " + i}`;
  const context = new AC.SerializationContext(AC.Versions.v1_5);
  const card = new AC.AdaptiveCard();
  card.parse(entry.card, context);
  const problems = [];
  for (let e = 0; e < context.eventCount; e++) {
    problems.push(context.getEventAt(e).message);
  }
  for (const event of card.validateProperties().validationEvents) {
    problems.push(event.message);
  }
  if (entry.card.version !== "1.5") problems.push(`version is ${entry.card.version}, not 1.5`);
  if (problems.length === 0) {
    console.log(`PASS adaptivecards parses and validates: ${label}`);
  } else {
    failed++;
    console.log(`FAIL adaptivecards parses and validates: ${label}: ${problems.join("; ")}`);
  }
});
if (cards.length === 0) {
  console.log("FAIL adaptivecards: no cards were captured");
  failed++;
}
process.exit(failed ? 1 : 0);
