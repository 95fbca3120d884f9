//! A box's network as its handle shows it: the ports its helper bound and the decisions
//! its egress policy made.

use super::LiteBox;
use crate::layout::SocketPaths;
use crate::model::BoxState;
use crate::net::{BoundPort, LogEntry};
use crate::util::lock::LockMode;

impl LiteBox {
    /// The published ports as bound now (with the real host port where 0 was asked
    /// for). Empty unless the box runs with a live network helper.
    pub async fn ports(&self) -> Result<Vec<BoundPort>, crate::Error> {
        let row = self.lock(LockMode::Shared).await?.row;
        if row.status.state() != BoxState::Running || row.status.net_helper.is_none() {
            return Ok(Vec::new());
        }
        let sockets = SocketPaths::for_box(&self.id);
        Ok(
            crate::util::blocking::run(move || crate::net::bound_ports(&sockets))
                .await
                .unwrap_or_default(),
        )
    }

    /// The egress decisions recorded for this box, oldest first: every connection, UDP
    /// flow and DNS query the policy decided, with the rule or default that decided it.
    /// Kept across restarts, size-capped (about the last 2 MiB).
    pub async fn network_log(&self) -> Result<Vec<LogEntry>, crate::Error> {
        let _ = self.lock(LockMode::Shared).await?;
        let paths = self.home().box_paths(&self.id);
        Ok(crate::util::blocking::run(move || crate::net::decisions(&paths)).await)
    }
}
