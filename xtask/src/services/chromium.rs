//! Headless Chromium and its WebDriver, for the monitor's browser tests: Debian's `chromium`
//! and `chromium-driver` (with fonts, so screenshots show text), apt-installed when missing.
//! Not a server: each test starts its own chromedriver on a free port; this only installs the
//! binaries and says where they are.

use std::path::Path;
use std::process::Command;

use crate::util::{self, Result, err};

/// Where Debian installs the browser's wrapper script.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian installs the WebDriver server.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const PACKAGES: &[&str] = &[
    "chromium",
    "chromium-driver",
    "fonts-liberation",
    "fonts-dejavu-core",
];

/// Installs Chromium and chromedriver if missing; the variables the browser tests read.
pub fn ensure() -> Result<Vec<(&'static str, String)>> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        super::apt_install(PACKAGES)?;
    }
    let version = util::output(Command::new(CHROMEDRIVER).arg("--version"))?;
    if !version.contains("ChromeDriver") {
        return err(format!("{CHROMEDRIVER} --version said: {version}"));
    }
    println!("{}", version.trim());
    Ok(vec![
        ("QUEUE_TEST_CHROMIUM", CHROMIUM.to_owned()),
        ("QUEUE_TEST_CHROMEDRIVER", CHROMEDRIVER.to_owned()),
    ])
}
