//! The in-kernel fast path for `dev:` ports against real kernel stacks. Needs root.

use vswitch_datapath::SwitchConfig;
use vswitch_testkit::{Attach, SwitchLab, ping, require_root};

fn config() -> SwitchConfig {
    SwitchConfig {
        threads: 2,
        ..SwitchConfig::default()
    }
}

#[test]
fn debug_fast_path() {
    if !require_root("debug_fast_path") {
        return;
    }
    let lab = SwitchLab::new(2, config(), Attach::Veth).expect("lab");
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    let r = ping(&a.ns, b.addr, 5);
    eprintln!("{r}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    eprintln!("{:?}\n{:?}", lab.port_stats(0), lab.port_stats(1));
    eprintln!("{:?}", lab.switch.fast_path_ports());
    eprintln!("{:?}", lab.switch.fdb());
    eprintln!("a {} b {}", a.mac().unwrap(), b.mac().unwrap());
    for p in lab.switch.ports() {
        eprintln!("{} {:?}", p.name(), p.device().mac());
    }
}
