//! `sip-ha serve`: the far end of the link. The other server starts it over
//! SSH and talks to it over standard input and output, so nothing else may
//! print to stdout here: errors go to stderr and syslog.

use crate::cli::{Cli, ServeArgs};
use crate::config::Config;
use crate::link::{self, LocalNode, StatusReply};
use crate::state;
use anyhow::Result;
use sip_ha_core::Role;

/// Answers status requests from this node's state file and interface.
struct NodeStatus {
    cfg: Config,
    role: Role,
}

impl LocalNode for NodeStatus {
    fn status(&self) -> Result<StatusReply> {
        let loaded = state::load(&self.cfg.cluster.state_dir, self.role)?;
        let me = self.cfg.node(self.role);
        let holds = crate::identity::holds(&me.interface, self.cfg.cluster.service_address.addr())?;
        let node = sip_ha_core::Node::new(
            self.role,
            crate::driver::policy(&self.cfg),
            loaded.state.memory,
        );
        let report = node.report(holds);
        // A state not written for a while means the loop or cron is not
        // running there: say so, the caller sees it in -v.
        let age_ms = state::now_ms().saturating_sub(loaded.state.updated_ms);
        let summary = match loaded.notice {
            Some(n) => n,
            None if loaded.state.updated_ms == 0 => "no pass has run yet".to_string(),
            None => format!("state written {} ms ago", age_ms),
        };
        Ok(StatusReply {
            software_version: link::protocol::SOFTWARE_VERSION.to_string(),
            cluster: self.cfg.cluster.name.clone(),
            report,
            summary,
        })
    }

    fn wake(&self) -> Result<bool> {
        crate::driver::requests::wake_loop(&self.cfg.cluster.state_dir)
    }
}

pub fn run(cli: &Cli, args: &ServeArgs) -> Result<i32> {
    let rt = super::runtime()?;
    rt.block_on(async {
        match &args.status_file {
            Some(path) => link::serve_stdio(&link::StatusFile(path.clone())).await,
            None => {
                let (cfg, role) = super::load(cli)?;
                link::serve_stdio(&NodeStatus { cfg, role }).await
            }
        }
    })?;
    Ok(0)
}
