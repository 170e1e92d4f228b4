//! A certificate authority and node certificates for a local TLS cluster
//! (`scripts/cluster.sh start --tls`, through the `broker-certs` tool), with
//! rcgen. Not a PKI: one CA per cluster directory, kept beside the cluster's other
//! secrets. Tests make their certificates here too, as the script does.
//!
//! ```text
//! broker-certs ca --out DIR                       DIR/ca.pem, DIR/ca-key.pem
//! broker-certs node --ca-dir DIR --name node-1 --ip 10.77.1.11 --dns localhost --out DIR
//!                                                 DIR/node-1.pem, DIR/node-1-key.pem
//! ```
//!
//! Keys are ECDSA P-256 and written with mode 0600, created new (an existing file
//! is never overwritten: a CA that clients already trust must not change under
//! them). Certificates are 0644: clients need `ca.pem`. A node certificate names
//! its IPs and DNS names as subject alternative names (what rustls checks), and
//! may serve and call (server and client auth).
//!
//! The CA's subject is fixed ([`CA_COMMON_NAME`]), so `node` rebuilds the issuer
//! from `ca-key.pem` alone and checks that `ca.pem` holds that key; rcgen cannot
//! parse a certificate without its `x509-parser` feature, which this avoids.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The subject of every CA this tool makes (see the module documentation).
const CA_COMMON_NAME: &str = "broker local cluster CA";
const ORGANIZATION: &str = "broker (scripts/cluster.sh)";
/// A CA outlives many restarts of a local cluster.
const CA_VALIDITY_DAYS: i64 = 10 * 365;
/// What browsers accept at most for a server certificate (825 days).
const NODE_VALIDITY_DAYS: i64 = 825;
/// Certificates start a day early: clocks of a local cluster's hosts may differ.
const BACKDATE_DAYS: i64 = 1;

/// Creates a CA in `out`: `ca-key.pem` (0600) and `ca.pem` (0644); returns the
/// certificate's path.
///
/// # Errors
/// A file that exists already, or any I/O or signing failure.
pub fn make_ca(out: &Path) -> anyhow::Result<PathBuf> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let cert = ca_params(CA_VALIDITY_DAYS)?
        .self_signed(&key)
        .context("signing the CA certificate")?;
    create_dir(out)?;
    // The key first: a directory with ca.pem but no key cannot sign anything, and
    // `node` says so; one with a key and no certificate is simply made again.
    write_new(&out.join("ca-key.pem"), &key.serialize_pem(), 0o600)?;
    write_new(&out.join("ca.pem"), &cert.pem(), 0o644)?;
    Ok(out.join("ca.pem"))
}

/// The CA's parameters; the subject and key usages are the same on every call,
/// which is what lets `node` rebuild the issuer (see the module documentation).
fn ca_params(validity_days: i64) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORGANIZATION);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, validity_days)?;
    Ok(params)
}

/// Creates a certificate named `name` for `ips` and `dns_names`, signed by the CA in
/// `ca_dir`, in `out`: `NAME-key.pem` (0600) and `NAME.pem` (0644); returns the
/// certificate's path.
///
/// # Errors
/// A bad name, no address, a missing or mismatched CA, a file that exists already.
pub fn make_node(
    ca_dir: &Path,
    name: &str,
    ips: &[IpAddr],
    dns_names: &[String],
    out: &Path,
) -> anyhow::Result<PathBuf> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("--name `{name}`: letters, digits, '-' and '_' only (it names the files)");
    }
    if ips.is_empty() && dns_names.is_empty() {
        bail!("name at least one --ip or --dns: clients check the address against them");
    }
    let (ca_cert, ca_key) = load_ca(ca_dir)?;
    let key = KeyPair::generate().context("generating the node key")?;
    let mut params = CertificateParams::new(dns_names.to_vec())
        .with_context(|| format!("--dns {dns_names:?}"))?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, ORGANIZATION);
    params.is_ca = IsCa::ExplicitNoCa;
    // ECDSA keys only sign (key encipherment is for RSA key transport).
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Nodes serve clients and call each other (Raft, forwarding).
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, NODE_VALIDITY_DAYS)?;
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .context("signing the node certificate")?;
    create_dir(out)?;
    write_new(
        &out.join(format!("{name}-key.pem")),
        &key.serialize_pem(),
        0o600,
    )?;
    write_new(&out.join(format!("{name}.pem")), &cert.pem(), 0o644)?;
    Ok(out.join(format!("{name}.pem")))
}

/// The CA as an issuer: its key from `ca-key.pem`, its certificate rebuilt from
/// the fixed parameters, after checking that `ca.pem` holds the same public key.
fn load_ca(dir: &Path) -> anyhow::Result<(Certificate, KeyPair)> {
    let key_path = dir.join("ca-key.pem");
    let cert_path = dir.join("ca.pem");
    let key_pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
    let ca_der = CertificateDer::from_pem_file(&cert_path)
        .with_context(|| format!("reading a PEM certificate from {}", cert_path.display()))?;
    // The certificate embeds its SubjectPublicKeyInfo verbatim.
    let spki = key.public_key_der();
    if !ca_der
        .as_ref()
        .windows(spki.len())
        .any(|w| w == spki.as_slice())
    {
        bail!(
            "{} does not certify the key in {}: they are not one CA",
            cert_path.display(),
            key_path.display()
        );
    }
    let issuer = ca_params(CA_VALIDITY_DAYS)?
        .self_signed(&key)
        .context("rebuilding the CA issuer")?;
    Ok((issuer, key))
}

fn set_validity(params: &mut CertificateParams, days: i64) -> anyhow::Result<()> {
    let today = days_since_epoch()?;
    let (year, month, day) = civil_date(today - BACKDATE_DAYS)?;
    params.not_before = rcgen::date_time_ymd(year, month, day);
    let (year, month, day) = civil_date(today + days)?;
    params.not_after = rcgen::date_time_ymd(year, month, day);
    Ok(())
}

fn days_since_epoch() -> anyhow::Result<i64> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    Ok(i64::try_from(secs / 86_400)?)
}

/// Year, month and day of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), for rcgen's `date_time_ymd`.
fn civil_date(days: i64) -> anyhow::Result<(i32, u8, u8)> {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    Ok((
        i32::try_from(year)?,
        u8::try_from(month)?,
        u8::try_from(day)?,
    ))
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Creates `path` with `mode` (never an existing file) and writes `text`.
fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing file is never overwritten; remove it first)",
                path.display()
            )
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::civil_date;

    #[test]
    fn civil_dates_of_known_days() {
        assert_eq!(civil_date(0).ok(), Some((1970, 1, 1)));
        assert_eq!(civil_date(59).ok(), Some((1970, 3, 1)));
        assert_eq!(civil_date(11_016).ok(), Some((2000, 2, 29)));
        assert_eq!(civil_date(20_818).ok(), Some((2026, 12, 31)));
        assert_eq!(civil_date(-1).ok(), Some((1969, 12, 31)));
    }
}
