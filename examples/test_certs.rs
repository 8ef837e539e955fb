//! Writes the certificates of `scripts/pg-server tls` (a CA, a server
//! certificate for `localhost`, client certificates, an encrypted key,
//! CRLs; see `tests/pki`) into a new directory:
//! `cargo run --example test_certs -- DIR CERT_USER KEY_PASSWORD`.
//! The tests' certificates have one source, rcgen; this is how the script
//! gets its share.

#[path = "../tests/pki/mod.rs"]
mod pki;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, cert_user, key_password] = args.as_slice() else {
        eprintln!("usage: test_certs DIR CERT_USER KEY_PASSWORD");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    if let Err(err) = std::fs::create_dir(&dir) {
        eprintln!("cannot create {}: {err}", dir.display());
        return ExitCode::FAILURE;
    }
    pki::write_server_set(&dir, cert_user, key_password);
    ExitCode::SUCCESS
}
