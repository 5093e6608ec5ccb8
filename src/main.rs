//! The `airlock` binary: parse the command line and hand over to `cli`.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    airlock::cli::main()
}
