//! The binary: parse the command line, dispatch, exit with the command's status.

fn main() -> std::process::ExitCode {
    promoter::cli::main()
}
