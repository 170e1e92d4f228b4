//! `mqctl`: the command line client of the broker's HTTP/JSON API. Everything lives
//! in [`mqctl`]; this only hands over the process.

fn main() -> std::process::ExitCode {
    mqctl::main()
}
