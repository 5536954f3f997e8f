//! What can change while a switch runs, as the control socket asks: the FDB, ports, pipelines,
//! MACVLAN bindings, VLAN modes and port flags.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use vswitch_core::pipeline::MirrorTarget;
use vswitch_core::{FdbKey, MacAddr, Pipeline, PortId, VlanMode, VlanSet};

use crate::pipeline::Hook;
use crate::port::{Port, PortDevice};

use super::shared::Forwarder;
use super::start::queue_worker;
use super::worker::{RxQueue, WorkerCommand};
use super::{ControlError, Switch, lock};

/// One row of [`Switch::fdb`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbRow {
    /// VLAN and MAC.
    pub key: FdbKey,
    /// The port's name.
    pub port: String,
    /// Time since last seen; `None` for a static entry.
    pub age: Option<Duration>,
}

impl Switch {
    /// The table's entries now (expired ones left out): key, port name, age.
    pub fn fdb(&self) -> Vec<FdbRow> {
        let now = self.shared.now();
        let state = self.shared.read();
        let names = state.ports.names();
        state
            .table
            .entries()
            .filter(|e| state.table.lookup(e.key, now) == Some(e.port))
            .map(|e| FdbRow {
                key: e.key,
                port: names
                    .get(e.port.index())
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| e.port.to_string()),
                age: e.last_seen.map(|seen| now.saturating_since(seen)),
            })
            .collect()
    }

    fn learning_table(&self) -> Result<(), ControlError> {
        match self.shared.forwarder {
            Forwarder::Learning(_) => Ok(()),
            Forwarder::Macvlan(_) => Err(ControlError::NoTable),
        }
    }

    fn live_port(&self, name: &str) -> Result<Arc<Port>, ControlError> {
        self.shared.read().ports.live_named(name).cloned()
    }

    /// Pins `mac` (untagged) to port `port`: never aged, never moved by learning.
    pub fn add_static(&self, mac: MacAddr, port: &str) -> Result<(), ControlError> {
        self.learning_table()?;
        {
            let mut state = self.shared.write();
            let id = state.ports.live_named(port)?.id();
            state.table.add_static(FdbKey::untagged(mac), id);
        }
        self.shared.sync_fast_fdb();
        Ok(())
    }

    /// [`Switch::add_static`], and for a VXLAN port the remote VTEP `dst` the MAC is behind.
    pub fn add_static_at(
        &self,
        mac: MacAddr,
        port: &str,
        dst: Option<std::net::IpAddr>,
    ) -> Result<(), ControlError> {
        if let Some(dst) = dst {
            self.live_port(port)?
                .device()
                .tunnel()
                .ok_or_else(|| {
                    ControlError::Policy(format!("--dst on {port}: only a VXLAN port has remotes"))
                })?
                .add_remote(mac, dst)
                .map_err(|e| ControlError::Policy(format!("--dst on {port}: {e}")))?;
        }
        self.add_static(mac, port)
    }

    /// Removes the entry for `mac`, static or learned; false if there was none.
    pub fn remove_fdb(&self, mac: MacAddr) -> Result<bool, ControlError> {
        self.learning_table()?;
        for port in self.ports() {
            if let Some(tunnel) = port.device().tunnel() {
                tunnel.remove_remote(mac);
            }
        }
        let removed = self.shared.write().table.remove(FdbKey::untagged(mac));
        self.shared.sync_fast_fdb();
        Ok(removed)
    }

    /// Forgets learned entries, of one port or all; returns how many.
    pub fn flush_fdb(&self, port: Option<&str>) -> Result<usize, ControlError> {
        self.learning_table()?;
        let flushed = {
            let mut state = self.shared.write();
            let id = match port {
                Some(name) => Some(state.ports.live_named(name)?.id()),
                None => None,
            };
            state.table.flush_dynamic(id)
        };
        self.shared.sync_fast_fdb();
        Ok(flushed)
    }

    /// Attaches a new port while the switch runs; traffic among the others is not disturbed.
    pub fn add_port(
        &self,
        name: String,
        device: Box<dyn PortDevice>,
    ) -> Result<PortId, ControlError> {
        if matches!(self.shared.forwarder, Forwarder::Macvlan(_)) {
            return Err(ControlError::Macvlan);
        }
        let workers = lock(&self.workers);
        if workers.is_empty() {
            return Err(ControlError::Stopping);
        }
        let port = self.shared.write().ports.add(name, device)?;
        let first = self.next_worker.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            port = port.name(),
            queues = port.capabilities().rx_queues,
            "port added"
        );
        self.shared.attach_fast(&port);
        self.shared.sync_fast_ports();
        let by_cpu = self.shared.steer(&port);
        for queue in 0..port.capabilities().rx_queues {
            let w = queue_worker(by_cpu, first, queue, workers.len());
            let rxq = RxQueue {
                port: port.clone(),
                queue,
            };
            let _ = workers[w].commands.send(WorkerCommand::Add(rxq));
            let _ = workers[w].waker.wake();
        }
        Ok(port.id())
    }

    /// Detaches port `name` (the live one, else a gone one of that name) and forgets its MACs;
    /// its device is closed (a TAP the switch created disappears).
    pub fn remove_port(&self, name: &str) -> Result<(), ControlError> {
        if matches!(self.shared.forwarder, Forwarder::Macvlan(_)) {
            return Err(ControlError::Macvlan);
        }
        let id = self.shared.read().ports.named(name).map(|p| p.id());
        // The kernel stops redirecting to it before the switch forgets it.
        if let (Some(fast), Some(id)) = (self.shared.fast.get(), id) {
            fast.detach(id);
        }
        let port = {
            let mut state = self.shared.write();
            let port = state.ports.remove(name)?;
            state.table.flush_port(port.id());
            port
        };
        self.shared.sync_fast_fdb();
        for worker in lock(&self.workers).iter() {
            let _ = worker.commands.send(WorkerCommand::Remove(port.id()));
            let _ = worker.waker.wake();
        }
        // The device closes with the last reference: wait (briefly) for the workers to let go,
        // so that what it made (a TAP, a relay) is gone when this returns.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while Arc::strong_count(&port) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(port);
        tracing::info!(port = name, "port removed");
        Ok(())
    }

    /// Installs a pipeline (text form, see [`vswitch_core::pipeline`]) on `port` for `hook`,
    /// replacing what was there; other ports are not disturbed.
    pub fn set_pipeline(&self, port: &str, hook: Hook, text: &str) -> Result<(), ControlError> {
        let port = self.live_port(port)?;
        let pipeline = Pipeline::parse(text).map_err(|e| ControlError::Pipeline(e.to_string()))?;
        for i in 0..pipeline.stages().len() {
            if let Some(MirrorTarget::Port(target)) = pipeline.mirror_target(i) {
                self.live_port(target)?;
            }
        }
        // Installed before the fast path lets go of the port: no frame bypasses the stages.
        let installed = port
            .pipeline(hook)
            .install(pipeline)
            .map_err(|e| ControlError::Pipeline(format!("couldn't open the mirror file: {e}")));
        self.shared.sync_fast_ports();
        installed
    }

    /// Removes `port`'s pipeline for `hook`.
    pub fn clear_pipeline(&self, port: &str, hook: Hook) -> Result<(), ControlError> {
        self.live_port(port)?.pipeline(hook).clear();
        self.shared.sync_fast_ports();
        Ok(())
    }

    /// `port`'s stages and their counters, ingress then egress.
    pub fn describe_pipelines(&self, port: &str) -> Result<[(Hook, Vec<String>); 2], ControlError> {
        let port = self.live_port(port)?;
        Ok([Hook::Ingress, Hook::Egress].map(|h| (h, port.pipeline(h).describe())))
    }

    /// Binds `mac` to MACVLAN sub-port `port` (source mode: adds it to the sources the port
    /// accepts), from the next frame on.
    pub fn macvlan_bind(&self, mac: MacAddr, port: &str) -> Result<(), ControlError> {
        let Forwarder::Macvlan(table) = &self.shared.forwarder else {
            return Err(ControlError::NotMacvlan);
        };
        let port = self.live_port(port)?;
        table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .bind(mac, port.id())
            .map_err(|e| ControlError::Policy(e.to_string()))
    }

    /// Takes `mac` off MACVLAN sub-port `port`; false if it wasn't bound there.
    pub fn macvlan_unbind(&self, mac: MacAddr, port: &str) -> Result<bool, ControlError> {
        let Forwarder::Macvlan(table) = &self.shared.forwarder else {
            return Err(ControlError::NotMacvlan);
        };
        let port = self.live_port(port)?;
        Ok(table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .unbind(mac, port.id()))
    }

    /// Every MACVLAN binding: MAC and sub-port name.
    pub fn macvlan_bindings(&self) -> Result<Vec<(MacAddr, String)>, ControlError> {
        let Forwarder::Macvlan(table) = &self.shared.forwarder else {
            return Err(ControlError::NotMacvlan);
        };
        let names = self.shared.read().ports.names();
        let bindings = table.read().unwrap_or_else(|e| e.into_inner()).bindings();
        Ok(bindings
            .into_iter()
            .map(|(mac, port)| {
                let name = names.get(port.index()).cloned().flatten();
                (mac, name.unwrap_or_else(|| port.to_string()))
            })
            .collect())
    }

    /// Puts port `name` in VLAN `mode` (see [`VlanMode`]); its learned entries are forgotten
    /// (they belonged to its old VLAN), and the fast path leaves a port with VLANs to the switch.
    pub fn set_vlan(&self, name: &str, mode: VlanMode) -> Result<(), ControlError> {
        self.learning_table()?;
        {
            let mut state = self.shared.write();
            let (id, policy) = state.ports.live_policy_mut(name)?;
            policy.vlan = mode;
            state.table.flush_port(id);
        }
        self.shared.sync_fast_ports();
        self.shared.sync_fast_fdb();
        Ok(())
    }

    /// Adds `vlans` to trunk port `name`'s list, or takes them off (`add` false).
    pub fn change_trunk(&self, name: &str, vlans: &VlanSet, add: bool) -> Result<(), ControlError> {
        self.learning_table()?;
        let mut state = self.shared.write();
        let (_, policy) = state.ports.live_policy_mut(name)?;
        policy
            .vlan
            .change_trunk(vlans, add)
            .map_err(|e| ControlError::Policy(format!("port {name}: {e}")))
    }

    /// Sets flag `flag` (`learning`, `flood`, `mcast-flood`, `bcast-flood`, `isolated`,
    /// `hairpin`) of port `name` to `value` (`on`/`off`).
    pub fn set_port_flag(&self, name: &str, flag: &str, value: &str) -> Result<(), ControlError> {
        self.learning_table()?;
        {
            let mut state = self.shared.write();
            let (_, policy) = state.ports.live_policy_mut(name)?;
            policy
                .flags
                .set(flag, value)
                .map_err(ControlError::Policy)?;
        }
        self.shared.sync_fast_ports();
        Ok(())
    }

    /// Tells the fast path that a capture started or ended (so a captured port's frames all
    /// pass through the switch); the housekeeping tick does it too, within a second.
    pub fn captures_changed(&self) {
        self.shared.sync_fast_ports();
    }
}
