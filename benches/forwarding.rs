//! Criterion micro-benchmarks of the per-frame path: the forwarding decision at several table
//! sizes, learning new MACs, MACVLAN dispatch, and frames through the real workers over in-memory
//! ports.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vswitch_core::forward::{Scope, decide, decide_in};
use vswitch_core::vlan::{classify, egress};
use vswitch_core::vnet::remove_vlan_tag;
use vswitch_core::{
    FdbKey, ForwardingConfig, FrameView, Ingress, MacAddr, MacTable, MacvlanMode, MacvlanTable,
    Pipeline, PortId, TableConfig, Timestamp, VNET_HDR_LEN, VlanId, VlanMode, VnetHeader,
};
use vswitch_datapath::{Hook, HugePageAlloc, MemoryPort, PortDevice, Switch, SwitchConfig};

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
}

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

/// Counts heap bytes in use, to report the table's memory per entry, over the allocator the
/// `vswitch` binary uses (huge pages behind large blocks).
struct CountingAllocator;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `HugePageAlloc` unchanged and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { HugePageAlloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { HugePageAlloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn filled_table(n: u32) -> MacTable {
    filled_table_in(n, VlanId::UNTAGGED)
}

fn filled_table_in(n: u32, vlan: VlanId) -> MacTable {
    let mut table = MacTable::new(TableConfig {
        capacity: n as usize + 1,
        ..TableConfig::default()
    });
    let mut events = Vec::new();
    for i in 0..n {
        table.learn(
            FdbKey { vlan, mac: mac(i) },
            PortId((i % 8) as u16),
            Timestamp::ZERO,
            &mut events,
        );
        events.clear();
    }
    table
}

/// Not a timing: heap bytes per learned MAC in a table of 1 000 000, printed once.
fn memory_per_entry(_c: &mut Criterion) {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let table = filled_table(1_000_000);
    let bytes = ALLOCATED.load(Ordering::Relaxed) - before;
    println!(
        "mac_table_memory: {} entries use {:.1} MiB, {:.0} bytes per entry",
        table.len(),
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / table.len() as f64
    );
}

fn decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_known_unicast");
    group.throughput(Throughput::Elements(1));
    for n in [1u32, 1_000, 1_000_000] {
        let table = filled_table(n);
        // Frames between learned hosts spread over the table, so lookups miss the cache as a
        // large table would.
        let frames: Vec<Vec<u8>> = (0..1024u32)
            .map(|i| frame(mac((i * 7919) % n), mac((i * 104_729 + 1) % n)))
            .collect();
        let cfg = ForwardingConfig::default();
        group.bench_with_input(BenchmarkId::from_parameter(n), &frames, |b, frames| {
            let mut i = 0;
            b.iter(|| {
                let f = &frames[i & 1023];
                i += 1;
                let src_port = PortId((((i - 1) * 104_729 + 1) as u32 % n % 8) as u16);
                let view = FrameView::new(black_box(f), VnetHeader::default()).expect("a frame");
                black_box(decide(&table, &cfg, Timestamp::ZERO, src_port, &view))
            })
        });
    }
    group.finish();
}

/// The same decision on a switch with VLANs: the frame arrives tagged on a trunk, is classified
/// into its VLAN, decided there, and its egress port's mode says how it leaves; against the
/// decision without VLANs, in the same run (the target: within 10%).
fn decision_with_vlans(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_known_unicast_1000");
    group.throughput(Throughput::Elements(1));
    let n = 1_000u32;
    let cfg = ForwardingConfig::default();
    let untagged: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| frame(mac((i * 7919) % n), mac((i * 104_729 + 1) % n)))
        .collect();
    let tagged: Vec<Vec<u8>> = untagged
        .iter()
        .map(|f| {
            let mut t = f[..12].to_vec();
            t.extend_from_slice(&[0x81, 0x00, 0x00, 10]);
            t.extend_from_slice(&f[12..]);
            t
        })
        .collect();
    // Both copy the frame behind a virtio-net header first, as a worker has it in its buffer.
    let hdr = VNET_HDR_LEN;
    let mut buf = vec![0u8; hdr + 128];
    let plain = filled_table(n);
    group.bench_function("no_vlans", |b| {
        let mut i = 0;
        b.iter(|| {
            let f = &untagged[i & 1023];
            i += 1;
            buf[hdr..hdr + f.len()].copy_from_slice(f);
            let view = FrameView::parse(black_box(&buf[..hdr + f.len()])).expect("a frame");
            black_box(decide(&plain, &cfg, Timestamp::ZERO, PortId(9), &view))
        })
    });
    let in_vlan = filled_table_in(n, VlanId::new(10));
    let trunk: VlanMode = "trunk 10,20".parse().expect("mode");
    let access: VlanMode = "access 10".parse().expect("mode");
    group.bench_function("trunk_to_access", |b| {
        let mut i = 0;
        b.iter(|| {
            let f = &tagged[i & 1023];
            i += 1;
            buf[hdr..hdr + f.len()].copy_from_slice(f);
            let Ingress::Member { vlan, tpid, .. } =
                classify(&trunk, black_box(&buf[hdr..hdr + f.len()]))
            else {
                unreachable!("VLAN 10 is on the trunk")
            };
            let len = remove_vlan_tag(&mut buf, hdr + f.len()).expect("tagged");
            let scope = Scope {
                vlan,
                ..Scope::default()
            };
            let view = FrameView::parse(&buf[..len]).expect("a frame");
            let decision = decide_in(&in_vlan, &cfg, Timestamp::ZERO, PortId(9), &view, &scope);
            black_box((decision, egress(&access, vlan, tpid)))
        })
    });
    group.finish();
}

fn learning(c: &mut Criterion) {
    let mut group = c.benchmark_group("learn_new_mac");
    group.throughput(Throughput::Elements(1));
    group.bench_function("into_65536_table_with_eviction", |b| {
        let mut table = filled_table(65_535);
        let mut events = Vec::new();
        let mut i = 1_000_000u32;
        b.iter(|| {
            i += 1;
            table.learn(
                FdbKey::untagged(mac(i)),
                PortId(0),
                Timestamp::ZERO,
                &mut events,
            );
            events.clear();
        })
    });
    group.finish();
}

/// MACVLAN dispatch from the uplink to a bound sub-port, at 1, 64 and 4096 bound MACs.
fn macvlan(c: &mut Criterion) {
    let mut group = c.benchmark_group("macvlan_dispatch");
    group.throughput(Throughput::Elements(1));
    for n in [1u32, 64, 4096] {
        let sub_ports: Vec<(PortId, Vec<MacAddr>)> = (0..n)
            .map(|i| (PortId(1 + (i % 4096) as u16), vec![mac(i)]))
            .collect();
        let table =
            MacvlanTable::new(MacvlanMode::Bridge, PortId(0), &sub_ports, vec![]).expect("table");
        let frames: Vec<Vec<u8>> = (0..1024u32)
            .map(|i| frame(mac((i * 7919) % n), mac(1_000_000 + i)))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &frames, |b, frames| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                let f = black_box(&frames[i & 1023]);
                let view = FrameView::new(f, VnetHeader::default()).expect("a frame");
                black_box(table.dispatch(PortId(0), &view))
            })
        });
    }
    group.finish();
}

/// The cost per frame of each pipeline stage, and of an empty pipeline.
fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline_stage");
    group.throughput(Throughput::Elements(1));
    let mut f = frame(mac(2), mac(1));
    f[14] = 0x45; // IPv4, protocol TCP, ports 1000 -> 80
    f[23] = 6;
    f[34..36].copy_from_slice(&1000u16.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[46] = 5 << 4;
    for (name, text) in [
        ("empty", ""),
        (
            "filter_3_rules",
            "filter drop proto icmp; filter count dst 10.0.0.0/8; filter allow dst-port 80",
        ),
        ("rate", "rate 10gbit"),
        (
            "impair_loss_delay",
            "impair loss 1% delay 1ms jitter 100us seed 1",
        ),
        ("storm", "storm 100000pps"),
    ] {
        let mut p = Pipeline::parse(text).expect("pipeline");
        let mut t = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                t += 1;
                black_box(p.process(Timestamp::from_micros(t), black_box(&f), false))
            })
        });
    }
    group.finish();
}

/// Frames through the real workers: port 0 sends 64-byte unicast to port 1's learned host.
fn workers(c: &mut Criterion) {
    let mut group = c.benchmark_group("workers_memory_ports");
    group.measurement_time(Duration::from_secs(5));
    let batch = 256u64;
    group.throughput(Throughput::Elements(batch));
    let (p0, peer0) = MemoryPort::pair(1500).expect("pair");
    let (p1, peer1) = MemoryPort::pair(1500).expect("pair");
    let ports: Vec<(String, Box<dyn PortDevice>)> =
        vec![("m0".into(), Box::new(p0)), ("m1".into(), Box::new(p1))];
    let switch = Switch::start(
        SwitchConfig {
            threads: 2,
            ..SwitchConfig::default()
        },
        ports,
    )
    .expect("switch");
    // Teach the switch where mac(1) lives.
    peer1
        .send(&frame(MacAddr::BROADCAST, mac(1)))
        .expect("send");
    std::thread::sleep(Duration::from_millis(50));
    let f = frame(mac(1), mac(0));
    let mut buf = vec![0u8; 2048];
    let mut run = |name: &str| {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut received = 0;
                let mut sent = 0;
                while received < batch {
                    if sent < batch {
                        match peer0.send(&f) {
                            Ok(()) => sent += 1,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    match peer1.recv(&mut buf) {
                        Ok(_) => received += 1,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if sent == batch {
                                std::thread::yield_now();
                            }
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        });
    };
    run("unicast_64B");
    // An installed but empty pipeline must cost nothing; a one-rule filter shows what a stage
    // costs on the real path.
    switch
        .set_pipeline("m0", Hook::Ingress, "")
        .expect("empty pipeline");
    run("unicast_64B_empty_pipeline");
    switch
        .set_pipeline("m0", Hook::Ingress, "filter drop proto icmp")
        .expect("filter");
    run("unicast_64B_one_filter_rule");
    switch.clear_pipeline("m0", Hook::Ingress).expect("clear");
    // Both ports in VLAN 10: classification and egress per frame on the real path.
    for port in ["m0", "m1"] {
        switch
            .set_vlan(port, "access 10".parse().expect("mode"))
            .expect("vlan");
    }
    peer1
        .send(&frame(MacAddr::BROADCAST, mac(1)))
        .expect("send");
    std::thread::sleep(Duration::from_millis(50));
    run("unicast_64B_access_vlan");
    group.finish();
    drop(switch);
}

criterion_group!(
    benches,
    memory_per_entry,
    decision,
    decision_with_vlans,
    learning,
    macvlan,
    pipeline,
    workers
);
criterion_main!(benches);
