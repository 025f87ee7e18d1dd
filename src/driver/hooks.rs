//! Operator hooks (`[hooks]` in the config): commands run on a change, like
//! keepalived's notify scripts. A hook runs with `sh -c` and its own
//! timeout; its failure is logged and never holds up the move itself.

use crate::config::Config;
use crate::log::Logger;
use sip_ha_core::{Hook, Role};
use std::process::Stdio;
use tokio::process::Command;

/// The command configured for `hook`, if any.
pub fn command(cfg: &Config, hook: Hook) -> Option<&str> {
    match hook {
        Hook::OnActive => cfg.hooks.on_active.as_deref(),
        Hook::OnStandby => cfg.hooks.on_standby.as_deref(),
        Hook::OnDisable => cfg.hooks.on_disable.as_deref(),
    }
}

fn state_name(hook: Hook) -> &'static str {
    match hook {
        Hook::OnActive => "active",
        Hook::OnStandby => "standby",
        Hook::OnDisable => "disabled",
    }
}

/// Run `hook` if configured; log how it went. Returns an error text when it
/// failed, for the alert.
pub async fn run(cfg: &Config, role: Role, hook: Hook, log: &Logger) -> Option<String> {
    let cmd = command(cfg, hook)?;
    let name = format!("{hook:?}");
    let mut child = match Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("SIPHA_STATE", state_name(hook))
        .env("SIPHA_NODE", role.as_str())
        .env("SIPHA_PEER", role.peer().as_str())
        .env(
            "SIPHA_ADDRESS",
            cfg.cluster.service_address.addr().to_string(),
        )
        .env("SIPHA_CLUSTER", &cfg.cluster.name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("hook {name} (`{cmd}`) could not start: {e}");
            log.error(&msg);
            return Some(msg);
        }
    };
    let stderr = child.stderr.take();
    let waited = tokio::time::timeout(cfg.hooks.timeout, child.wait()).await;
    let first_line = async {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut text).await;
        }
        text.lines().next().unwrap_or("").to_string()
    };
    let failure = match waited {
        Ok(Ok(status)) if status.success() => None,
        Ok(Ok(status)) => Some(format!(
            "hook {name} (`{cmd}`) failed with {status}: {}",
            first_line.await
        )),
        Ok(Err(e)) => Some(format!(
            "hook {name} (`{cmd}`) could not be waited for: {e}"
        )),
        Err(_) => {
            let _ = child.kill().await;
            Some(format!(
                "hook {name} (`{cmd}`) did not finish within {:?} and was killed",
                cfg.hooks.timeout
            ))
        }
    };
    match &failure {
        Some(msg) => log.error(msg),
        None => log.info(&format!("hook {name} (`{cmd}`) done")),
    }
    failure
}
