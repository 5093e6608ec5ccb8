//! The `airlock` binary: parse the command line and hand over to `cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    airlock::cli::main()
}
