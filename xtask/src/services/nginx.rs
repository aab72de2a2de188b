//! nginx, for the monitor's reverse-proxy test: Debian's `nginx-light`, apt-installed when
//! missing. Not a server of ours: the test starts its own nginx (a config of its own, a free
//! port, no daemon); this only installs the binary and says where it is.

use std::path::Path;
use std::process::Command;

use crate::util::{Result, err};

/// Where Debian installs it.
const NGINX: &str = "/usr/sbin/nginx";

/// Installs nginx if missing; the variable the proxy test reads.
pub fn ensure() -> Result<Vec<(&'static str, String)>> {
    if !Path::new(NGINX).exists() {
        super::apt_install(&["nginx-light"])?;
    }
    // `nginx -v` writes its version to stderr.
    let version = Command::new(NGINX)
        .arg("-v")
        .output()
        .map_err(|error| format!("cannot run {NGINX}: {error}"))?;
    let said = String::from_utf8_lossy(&version.stderr).trim().to_owned();
    if !said.contains("nginx/") {
        return err(format!("{NGINX} -v said: {said}"));
    }
    println!("{said}");
    Ok(vec![("QUEUE_TEST_NGINX", NGINX.to_owned())])
}
