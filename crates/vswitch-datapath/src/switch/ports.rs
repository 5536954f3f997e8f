//! The port table: every port of the switch, by id, and where each is in its life.
//!
//! A port is [`PortState::Live`] from `start` or `port add` until its device vanishes
//! ([`PortState::Gone`]: out of forwarding, its MACs forgotten, its counters still reported) or
//! the operator removes it ([`PortState::Removed`]: out of the table, its device closed once no
//! worker holds it). A name added again is a new port with a new id. The table sits beside the
//! MAC table behind the switch's one state lock, so a port leaves forwarding and the MAC table in
//! one step: no batch that begins after the change sees the port live.

use std::sync::Arc;

use vswitch_core::{PortId, PortPolicy};

use crate::port::{Port, PortDevice, PortState};

use super::ControlError;

/// Every port of the switch, by id, with its VLAN membership and flags.
#[derive(Debug)]
pub(super) struct PortTable {
    /// By id; `None` once removed (ids are never reused, so a stale id finds nothing).
    slots: Vec<Option<Arc<Port>>>,
    /// Each port's VLAN membership and flags, by id.
    policies: Vec<PortPolicy>,
}

impl PortTable {
    /// A table of `ports`, numbered in order.
    pub(super) fn new(ports: Vec<(String, Box<dyn PortDevice>)>) -> PortTable {
        let slots: Vec<Option<Arc<Port>>> = ports
            .into_iter()
            .enumerate()
            .map(|(i, (name, dev))| Some(Arc::new(Port::new(PortId(i as u16), name, dev))))
            .collect();
        PortTable {
            policies: vec![PortPolicy::default(); slots.len()],
            slots,
        }
    }

    /// Port `id`, live or gone.
    pub(super) fn get(&self, id: PortId) -> Option<&Arc<Port>> {
        self.slots.get(id.index())?.as_ref()
    }

    /// Port `id` if it forwards.
    pub(super) fn live(&self, id: PortId) -> Option<&Arc<Port>> {
        self.get(id).filter(|p| p.state() == PortState::Live)
    }

    /// Every port that forwards, by id.
    pub(super) fn live_ports(&self) -> impl Iterator<Item = &Arc<Port>> {
        self.attached().filter(|p| p.state() == PortState::Live)
    }

    /// Every port not removed: live ones and those whose device went away.
    pub(super) fn attached(&self) -> impl Iterator<Item = &Arc<Port>> {
        self.slots.iter().flatten()
    }

    /// The port called `name`: the live one, else a gone one of that name (whose counters
    /// still show).
    pub(super) fn named(&self, name: &str) -> Option<&Arc<Port>> {
        let named = || self.attached().filter(|p| p.name() == name);
        named()
            .find(|p| p.state() == PortState::Live)
            .or_else(|| named().next())
    }

    /// The live port called `name`.
    pub(super) fn live_named(&self, name: &str) -> Result<&Arc<Port>, ControlError> {
        self.named(name)
            .filter(|p| p.state() == PortState::Live)
            .ok_or_else(|| ControlError::UnknownPort(name.to_owned()))
    }

    /// Each id's port name (`None` for a removed port).
    pub(super) fn names(&self) -> Vec<Option<String>> {
        self.slots
            .iter()
            .map(|p| p.as_ref().map(|p| p.name().to_owned()))
            .collect()
    }

    /// Port `id`'s policy.
    pub(super) fn policy(&self, id: PortId) -> &PortPolicy {
        static DEFAULT: std::sync::OnceLock<PortPolicy> = std::sync::OnceLock::new();
        self.policies
            .get(id.index())
            .unwrap_or_else(|| DEFAULT.get_or_init(PortPolicy::default))
    }

    /// The live port called `name`: its id and its policy, to change.
    pub(super) fn live_policy_mut(
        &mut self,
        name: &str,
    ) -> Result<(PortId, &mut PortPolicy), ControlError> {
        let id = self.live_named(name)?.id();
        let policy = self
            .policies
            .get_mut(id.index())
            .ok_or_else(|| ControlError::UnknownPort(name.to_owned()))?;
        Ok((id, policy))
    }

    /// Adds a live port called `name` under the next id; refused if a live port has that name.
    pub(super) fn add(
        &mut self,
        name: String,
        device: Box<dyn PortDevice>,
    ) -> Result<Arc<Port>, ControlError> {
        if self.live_ports().any(|p| p.name() == name) {
            return Err(ControlError::DuplicatePort(name));
        }
        let id = u16::try_from(self.slots.len()).map_err(|_| ControlError::TooManyPorts)?;
        let port = Arc::new(Port::new(PortId(id), name, device));
        self.slots.push(Some(port.clone()));
        self.policies.push(PortPolicy::default());
        Ok(port)
    }

    /// Live → gone, for a port whose device went away; false if it wasn't live.
    pub(super) fn mark_gone(&mut self, port: &Port) -> bool {
        port.advance(PortState::Gone)
    }

    /// Takes the port called `name` (the live one, else a gone one) out of the table.
    pub(super) fn remove(&mut self, name: &str) -> Result<Arc<Port>, ControlError> {
        let id = self
            .named(name)
            .ok_or_else(|| ControlError::UnknownPort(name.to_owned()))?
            .id();
        let port = self.slots[id.index()]
            .take()
            .ok_or_else(|| ControlError::UnknownPort(name.to_owned()))?;
        port.advance(PortState::Removed);
        Ok(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryPort;

    fn device() -> Box<dyn PortDevice> {
        Box::new(MemoryPort::pair(1500).expect("socketpair").0)
    }

    #[test]
    fn a_port_only_moves_forward() {
        let mut table = PortTable::new(vec![("a".into(), device())]);
        let a = table.live_named("a").expect("a").clone();
        assert!(table.mark_gone(&a));
        assert!(!table.mark_gone(&a), "gone twice");
        assert_eq!(a.state(), PortState::Gone);
        assert!(table.live(a.id()).is_none());
        assert!(table.named("a").is_some(), "a gone port still shows");
        table.remove("a").expect("remove");
        assert_eq!(a.state(), PortState::Removed);
        assert!(!table.mark_gone(&a), "back from removed");
        assert!(table.named("a").is_none());
    }

    #[test]
    fn a_name_added_again_is_a_new_port() {
        let mut table = PortTable::new(vec![("a".into(), device()), ("b".into(), device())]);
        assert!(matches!(
            table.add("a".into(), device()),
            Err(ControlError::DuplicatePort(_))
        ));
        let old = table.live_named("a").expect("a").clone();
        table.mark_gone(&old);
        let new = table.add("a".into(), device()).expect("add again");
        assert_ne!(old.id(), new.id());
        assert_eq!(table.named("a").map(|p| p.id()), Some(new.id()));
        assert_eq!(table.live_named("a").map(|p| p.id()).ok(), Some(new.id()));
        // Removal takes the live one first, then the gone one.
        assert_eq!(table.remove("a").expect("live").id(), new.id());
        assert_eq!(new.state(), PortState::Removed);
        assert_eq!(table.remove("a").expect("gone").id(), old.id());
        assert!(table.remove("a").is_err());
        assert_eq!(table.live_ports().count(), 1);
    }
}
