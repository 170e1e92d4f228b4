//! `broker-certs`: a certificate authority and node certificates for a local TLS
//! cluster (`scripts/cluster.sh start --tls`). What it makes, and why so, is
//! documented in [`broker::certs`].
//!
//! ```text
//! broker-certs ca --out DIR                       DIR/ca.pem, DIR/ca-key.pem
//! broker-certs node --ca-dir DIR --name node-1 --ip 10.77.1.11 --dns localhost --out DIR
//!                                                 DIR/node-1.pem, DIR/node-1-key.pem
//! ```

use std::net::IpAddr;
use std::path::PathBuf;

use broker::certs::{make_ca, make_node};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "broker-certs",
    version,
    about = "A CA and node certificates for a local TLS cluster (scripts/cluster.sh start --tls)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a CA: OUT/ca.pem (certificate) and OUT/ca-key.pem (mode 0600).
    Ca {
        /// Directory to write into (created with mode 0700 if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a node certificate signed by the CA in CA_DIR: OUT/NAME.pem and
    /// OUT/NAME-key.pem (mode 0600).
    Node {
        /// Directory holding ca.pem and ca-key.pem (from `broker-certs ca`).
        #[arg(long)]
        ca_dir: PathBuf,
        /// The certificate's common name and file name, e.g. node-1.
        #[arg(long)]
        name: String,
        /// An IP address clients use to reach the node (repeat for more).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// A DNS name clients use to reach the node (repeat for more).
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        /// Directory to write into (created with mode 0700 if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ca { out } => make_ca(&out),
        Command::Node {
            ca_dir,
            name,
            ips,
            dns_names,
            out,
        } => make_node(&ca_dir, &name, &ips, &dns_names, &out),
    };
    match result {
        Ok(written) => {
            println!("{}", written.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("broker-certs: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
