//! `airlock receipts verify`: check an approval receipt with the public key alone.
//!
//! Owns: the `receipts` subcommands, reading a receipt from a file or stdin.
//! Uses: `approval::receipt` (the format and the check), `audit` (keys, `canonical`).
//! Must not: need a running gateway or its database.

#![allow(clippy::print_stdout)] // printing what a receipt attests is the point of the command

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::approval::SignedReceipt;
use crate::approval::receipt::ReceiptError;
use crate::audit::{PublicKey, Sha256Digest, SigningKey, canonical};
use crate::cli::EXIT_FOUND_PROBLEM;
use crate::cli::log::DirArgs;

/// Subcommands of `airlock receipts`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Verify one signed receipt (the `_meta["airlock/approval"]` value, or one line of a
    /// downstream's receipts.jsonl); exit 0 valid, 1 invalid.
    Verify {
        /// The receipt file (`-` for stdin).
        file: PathBuf,
        /// The gateway's public key (`airlock keys show` output); default: the data dir's key.
        #[arg(long, value_name = "FILE")]
        pubkey: Option<PathBuf>,
        /// The call's arguments as JSON: also check they are the ones approved.
        #[arg(long, value_name = "JSON")]
        args: Option<String>,
        #[command(flatten)]
        dir: DirArgs,
    },
}

pub(crate) fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Verify { file, pubkey, args, dir } => verify(&file, pubkey.as_deref(), args.as_deref(), &dir),
    }
}

fn verify(file: &Path, pubkey: Option<&Path>, args: Option<&str>, dir: &DirArgs) -> anyhow::Result<ExitCode> {
    let key = match pubkey {
        Some(path) => PublicKey::read_file(path)?,
        None => {
            let (_, paths) = dir.paths()?;
            SigningKey::load(&paths.key)
                .with_context(|| "no key to check against: pass --pubkey FILE (the output of `airlock keys show`)")?
                .public_key()
        }
    };
    let args: Option<Value> = args.map(serde_json::from_str).transpose().context("--args is not JSON")?;
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let values: Vec<Result<Value, serde_json::Error>> = serde_json::Deserializer::from_str(&text).into_iter().collect();
    if values.len() > 1 {
        bail!("{} holds {} JSON values; pass one receipt (e.g. one line of receipts.jsonl)", file.display(), values.len());
    }
    let checked = match values.into_iter().next() {
        None => Err(ReceiptError::Malformed("the input is empty".to_owned())),
        Some(Err(error)) => Err(ReceiptError::Malformed(format!("not JSON: {error}"))),
        Some(Ok(value)) => check(&value, &key, args.as_ref()),
    };
    match checked {
        Ok(receipt) => {
            print_receipt(&receipt, args.is_some());
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("INVALID: {error}");
            Ok(ExitCode::from(EXIT_FOUND_PROBLEM))
        }
    }
}

/// The signature first, then (if given) the arguments against the signed digest.
fn check(value: &Value, key: &PublicKey, args: Option<&Value>) -> Result<SignedReceipt, ReceiptError> {
    let signed = SignedReceipt::from_value(value)?;
    signed.verify(key)?;
    if let Some(args) = args {
        let given = Sha256Digest::of(&canonical(args)).to_string();
        if given != signed.receipt.args_sha256 {
            return Err(ReceiptError::OtherArguments { receipt: signed.receipt.args_sha256.clone(), given });
        }
    }
    Ok(signed)
}

fn print_receipt(signed: &SignedReceipt, args_checked: bool) {
    let r = &signed.receipt;
    println!("ok: receipt signed by key {}", signed.key_id);
    println!("approval     {} ({})", r.approval_id, r.kind.as_str());
    println!("call         {}", r.call_id);
    println!("tool         {}", r.tool);
    println!("caller       {}", r.caller);
    println!("approvers    {}", r.approvers.join(", "));
    println!("decided at   {}", r.decided_at);
    let note = if args_checked { "matches --args" } else { "not compared: pass --args JSON" };
    println!("args sha256  {} ({note})", r.args_sha256);
    println!("tool sha256  {}", r.tool_fingerprint);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check;
    use crate::approval::receipt::{Receipt, ReceiptError};
    use crate::approval::{ApprovalId, Kind, SignedReceipt};
    use crate::audit::{AuditConfig, AuditLog, Durability, Sha256Digest, SigningKey, canonical};

    #[tokio::test]
    async fn a_receipt_verifies_only_unaltered_with_its_key_and_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = AuditConfig::new(dir.path());
        cfg.durability = Durability::None;
        let audit = AuditLog::open(cfg).unwrap();
        let args = json!({"user": "erin", "role": "admin"});
        let receipt = Receipt {
            v: 1,
            approval_id: ApprovalId::generate(),
            kind: Kind::Approve,
            call_id: "c1".into(),
            tool: "demo__grant_role".into(),
            caller: "carol".into(),
            approvers: vec!["bob".into()],
            decided_at: "2026-11-21T10:00:00Z".into(),
            args_sha256: Sha256Digest::of(&canonical(&args)).to_string(),
            tool_fingerprint: "00".repeat(32),
        };
        let value = SignedReceipt::sign(receipt, &audit).to_value();
        let key = audit.public_key();
        assert!(check(&value, &key, Some(&args)).is_ok());
        let mut altered = value.clone();
        altered["receipt"]["approvers"] = json!(["mallory"]);
        assert_eq!(check(&altered, &key, None).unwrap_err(), ReceiptError::BadSignature);
        let other = json!({"user": "erin", "role": "owner"});
        assert!(matches!(check(&value, &key, Some(&other)), Err(ReceiptError::OtherArguments { .. })));
        let stranger = SigningKey::generate().unwrap().public_key();
        assert!(matches!(check(&value, &stranger, None), Err(ReceiptError::OtherKey { .. })));
        assert!(matches!(check(&json!({"id": "x"}), &key, None), Err(ReceiptError::Malformed(_))));
    }
}
