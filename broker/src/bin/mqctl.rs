//! `mqctl`: the command line client of the broker's HTTP/JSON API. Everything lives
//! in [`broker::cli`]; this only hands over the process.

fn main() -> std::process::ExitCode {
    broker::cli::main()
}
