//! `broker-probe URL [TIMEOUT]`: GET an `http://` URL and exit 0 on a 2xx answer,
//! 1 on anything else. It is the health check of the container image, which is
//! `FROM scratch` and so has no curl or shell (see deploy/README.md).
//!
//! Plain std: one HTTP/1.1 request over a `TcpStream`, no async runtime, no
//! allocator swap, so the probe starts in a millisecond and a health check every
//! few seconds costs nothing. Names resolve through the libc resolver like the
//! broker's own peer connections do, so `broker-probe http://node2:8080/health`
//! run inside a container also checks that service names resolve there.
//!
//! Exit status 1 for every failure, never 2: Docker reserves 2 in health checks.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: broker-probe http://HOST[:PORT][/PATH] [TIMEOUT_MS]";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, timeout) = match args.as_slice() {
        [url] => (url.as_str(), DEFAULT_TIMEOUT),
        [url, ms] => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => (url.as_str(), Duration::from_millis(ms)),
            _ => return fail(&format!("`{ms}` is not a positive number of milliseconds")),
        },
        _ => return fail(USAGE),
    };
    match probe(url, timeout) {
        Ok(status_line) => {
            println!("{status_line}");
            if is_success(&status_line) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(&format!("{url}: {e}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("broker-probe: {message}");
    ExitCode::FAILURE
}

/// Sends the request and returns the response's status line.
fn probe(url: &str, timeout: Duration) -> Result<String, String> {
    let (authority, path) = split_url(url)?;
    let addrs: Vec<SocketAddr> = with_default_port(authority)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{authority}`: {e}"))?
        .collect();
    let mut last_error = format!("`{authority}` resolved to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return exchange(stream, authority, path, timeout),
            Err(e) => last_error = format!("connecting to {addr}: {e}"),
        }
    }
    Err(last_error)
}

fn exchange(
    mut stream: TcpStream,
    authority: &str,
    path: &str,
    timeout: Duration,
) -> Result<String, String> {
    let io = |e: std::io::Error| e.to_string();
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    // One write, one segment (`write!` on a socket writes each piece separately).
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: broker-probe\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut status_line = String::new();
    BufReader::new(stream)
        .read_line(&mut status_line)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let status_line = status_line.trim_end().to_string();
    if !status_line.starts_with("HTTP/") {
        return Err(format!("not an HTTP answer: `{status_line}`"));
    }
    Ok(status_line)
}

/// `http://host:port/path?q` → (`host:port`, `/path?q`).
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` must start with http:// ({USAGE})"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok((authority, path))
}

/// Appends `:80` when the authority has no port (`[::1]` counts as having none).
fn with_default_port(authority: &str) -> String {
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    }
}

/// `HTTP/1.1 204 No Content` → true.
fn is_success(status_line: &str) -> bool {
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .is_some_and(|code| (200..300).contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://node1:8080/ready"),
            Ok(("node1:8080", "/ready"))
        );
        assert_eq!(split_url("http://node1"), Ok(("node1", "/")));
        assert_eq!(
            split_url("http://[::1]:8080/v1/cluster?x=1"),
            Ok(("[::1]:8080", "/v1/cluster?x=1"))
        );
        assert!(split_url("https://node1/ready").is_err());
        assert!(split_url("http:///ready").is_err());
    }

    #[test]
    fn default_port_only_when_missing() {
        assert_eq!(with_default_port("node1"), "node1:80");
        assert_eq!(with_default_port("node1:8080"), "node1:8080");
        assert_eq!(with_default_port("[::1]"), "[::1]:80");
        assert_eq!(with_default_port("[::1]:9"), "[::1]:9");
    }

    #[test]
    fn only_2xx_is_success() {
        assert!(is_success("HTTP/1.1 200 OK"));
        assert!(is_success("HTTP/1.1 204 No Content"));
        assert!(!is_success("HTTP/1.1 503 Service Unavailable"));
        assert!(!is_success("HTTP/1.1 301 Moved Permanently"));
        assert!(!is_success("garbage"));
    }

    #[test]
    fn answers_a_real_server() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut conn, _) = listener.accept().expect("accept");
                // The request may arrive in several segments: read to its end.
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut chunk).expect("read");
                    assert!(n > 0, "connection closed mid-request");
                    request.extend_from_slice(&chunk[..n]);
                }
                let request = String::from_utf8_lossy(&request).to_string();
                assert!(request.starts_with("GET /ready HTTP/1.1\r\n"), "{request}");
                write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").expect("write");
            }
        });
        let url = format!("http://{addr}/ready");
        let first = probe(&url, DEFAULT_TIMEOUT).expect("first probe");
        assert!(is_success(&first), "{first}");
        let second = probe(&url, DEFAULT_TIMEOUT).expect("second probe");
        assert!(!is_success(&second), "{second}");
        server.join().expect("server thread");
        assert!(
            probe(&url, Duration::from_millis(200)).is_err(),
            "nobody listens"
        );
    }
}
