//! Per-port pipelines against real kernel stacks: filters, rate limits, impairments, mirrors.
//! Needs root.

use std::process::Command;
use std::time::{Duration, Instant};

use vswitch_core::DropReason;
use vswitch_datapath::{Hook, SwitchConfig};
use vswitch_netns::Netns;
use vswitch_testkit::{
    Attach, EchoOptions, SwitchLab, ping, ping_with, require_root, tcp_transfer, unique_name,
};

fn lab() -> SwitchLab {
    let config = SwitchConfig {
        threads: 2,
        ..SwitchConfig::default()
    };
    SwitchLab::new(2, config, Attach::Tap { offload: true }).expect("lab")
}

/// Average RTT in ms of 10 probes 50 ms apart, all of which must come back.
fn avg_rtt_ms(from: &Netns, to: std::net::Ipv4Addr) -> f64 {
    let report = ping_with(
        from,
        to,
        EchoOptions {
            count: 10,
            ..EchoOptions::default()
        },
    );
    assert!(report.all_replied(), "{report}");
    report.rtts.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / report.rtts.len() as f64
}

#[test]
fn an_icmp_drop_rule_stops_ping_while_tcp_passes() {
    if !require_root("an_icmp_drop_rule_stops_ping_while_tcp_passes") {
        return;
    }
    let lab = lab();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    assert!(ping(&a.ns, b.addr, 1).all_replied());
    let port_a = lab.switch.ports()[0].name().to_owned();
    lab.switch
        .set_pipeline(&port_a, Hook::Ingress, "filter drop proto icmp")
        .expect("set");
    assert!(
        ping(&a.ns, b.addr, 2).none_replied(),
        "ICMP must be dropped"
    );
    let t = tcp_transfer(&a.ns, &b.ns, b.addr, 5301, 5 << 20).expect("tcp");
    assert_eq!(
        (t.received, t.received_digest),
        (t.sent, t.sent_digest),
        "TCP must pass intact"
    );
    assert!(lab.port_stats(0).drops(DropReason::Pipeline) >= 2);
    let [(_, ingress), _] = lab.switch.describe_pipelines(&port_a).expect("describe");
    assert!(ingress[0].contains("filter drop proto 1"), "{ingress:?}");
    lab.switch
        .clear_pipeline(&port_a, Hook::Ingress)
        .expect("clear");
    assert!(
        ping(&a.ns, b.addr, 1).all_replied(),
        "ping again once cleared"
    );
}

#[test]
fn a_10_mbit_shaper_holds_tcp_to_10_mbit() {
    if !require_root("a_10_mbit_shaper_holds_tcp_to_10_mbit") {
        return;
    }
    let lab = lab();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    let port_b = lab.switch.ports()[1].name().to_owned();
    lab.switch
        .set_pipeline(&port_b, Hook::Egress, "rate 10mbit queue 200ms")
        .expect("set");
    let size = 4 << 20;
    let start = Instant::now();
    let t = tcp_transfer(&a.ns, &b.ns, b.addr, 5302, size).expect("tcp");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(t.received_digest, t.sent_digest);
    let mbit = size as f64 * 8.0 / secs / 1e6;
    assert!(
        (9.0..=11.0).contains(&mbit),
        "{mbit:.2} Mbit/s of payload through a 10 Mbit/s shaper"
    );
}

#[test]
fn delay_raises_rtt_by_50_ms_one_way_and_100_ms_both_ways() {
    if !require_root("delay_raises_rtt_by_50_ms_one_way_and_100_ms_both_ways") {
        return;
    }
    let lab = lab();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    let (port_a, port_b) = (
        lab.switch.ports()[0].name().to_owned(),
        lab.switch.ports()[1].name().to_owned(),
    );
    assert!(ping(&a.ns, b.addr, 1).all_replied());
    let base = avg_rtt_ms(&a.ns, b.addr);
    lab.switch
        .set_pipeline(&port_b, Hook::Egress, "impair delay 50ms")
        .expect("set");
    let one = avg_rtt_ms(&a.ns, b.addr);
    assert!(
        (45.0..=55.0).contains(&(one - base)),
        "one way: {base:.2} ms -> {one:.2} ms"
    );
    lab.switch
        .set_pipeline(&port_a, Hook::Egress, "impair delay 50ms")
        .expect("set");
    let both = avg_rtt_ms(&a.ns, b.addr);
    assert!(
        (95.0..=105.0).contains(&(both - base)),
        "both ways: {base:.2} ms -> {both:.2} ms"
    );
}

#[test]
fn ten_percent_loss_with_a_seed_is_ten_percent_and_repeatable() {
    if !require_root("ten_percent_loss_with_a_seed_is_ten_percent_and_repeatable") {
        return;
    }
    let lab = lab();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    let port_b = lab.switch.ports()[1].name().to_owned();
    assert!(ping(&a.ns, b.addr, 1).all_replied());
    // Permanent neighbour entries both ways: no ARP probe (nor its answer) may draw from the
    // stage's random sequence, so only the 2000 echo requests pass it, run after run.
    for (from, to) in [(a, b), (b, a)] {
        let neigh = Command::new("ip")
            .args([
                "-n",
                from.ns.name(),
                "neigh",
                "replace",
                &to.addr.to_string(),
            ])
            .args([
                "lladdr",
                &to.mac().expect("mac"),
                "dev",
                &from.ifname,
                "nud",
                "permanent",
            ])
            .status()
            .expect("ip");
        assert!(neigh.success());
    }
    let mut losses = Vec::new();
    for _ in 0..2 {
        // Installing the stage again restarts its random sequence from the seed.
        lab.switch
            .set_pipeline(&port_b, Hook::Egress, "impair loss 10% seed 42")
            .expect("set");
        // A reply is waited for up to 1 s, so a slow one on a loaded machine isn't a loss.
        let report = ping_with(
            &a.ns,
            b.addr,
            EchoOptions {
                count: 2000,
                interval: Duration::from_millis(2),
                ..EchoOptions::default()
            },
        );
        let [_, (_, egress)] = lab.switch.describe_pipelines(&port_b).expect("describe");
        let dropped = egress[0]
            .split("[dropped ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no drop count in {egress:?}"));
        // Exactly the requests the stage dropped went unanswered.
        assert_eq!(u64::from(report.lost()), dropped, "{report}");
        assert!(
            (140..=260).contains(&dropped),
            "{dropped} lost of 2000 at 10%"
        );
        losses.push(dropped);
    }
    assert_eq!(
        losses[0], losses[1],
        "the same seed must lose the same packets"
    );
}

#[test]
fn a_mirror_to_pcap_holds_the_frames_the_destination_got() {
    if !require_root("a_mirror_to_pcap_holds_the_frames_the_destination_got") {
        return;
    }
    let lab = lab();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    assert!(ping(&a.ns, b.addr, 1).all_replied());
    let port_b = lab.switch.ports()[1].name().to_owned();
    let file = std::env::temp_dir().join(format!("{}.pcap", unique_name("mir")));
    lab.switch
        .set_pipeline(
            &port_b,
            Hook::Egress,
            &format!("mirror file {}", file.display()),
        )
        .expect("set");
    // Every frame the port sends from here on passes the mirror stage first.
    let before = lab.port_stats(1).tx_packets;
    // Each reply came back after its request left port b: all ten are counted.
    assert!(ping(&a.ns, b.addr, 10).all_replied());
    let sent = lab.port_stats(1).tx_packets - before;
    lab.switch
        .clear_pipeline(&port_b, Hook::Egress)
        .expect("clear");
    let pcap = vswitch_testkit::read_pcap(&file);
    let _ = std::fs::remove_file(&file);
    // The mirror may also hold a stray frame (an ARP probe) that raced the first count.
    let mirrored = pcap.frames.len() as u64;
    assert!(
        (sent..=sent + 2).contains(&mirrored),
        "port sent {sent}, mirror holds {mirrored}"
    );
    // IPv4, ICMP, echo request (type 8): the ten requests a sent to b.
    let requests = pcap
        .frames
        .iter()
        .filter(|f| f.data.len() > 34 && f.data[12..14] == [8, 0] && f.data[23] == 1)
        .filter(|f| f.data[34] == 8)
        .count();
    assert_eq!(requests, 10, "{pcap:?}");
}

#[test]
fn corrupted_frames_are_caught_by_the_receivers_checksums_as_on_a_wire() {
    if !require_root("corrupted_frames_are_caught_by_the_receivers_checksums_as_on_a_wire") {
        return;
    }
    // With offloads, TCP crosses the switch as 64 KiB GSO frames with partial checksums; a bit
    // flipped in one must still be seen by the receiving stack (which then drops the segment and
    // TCP sends it again), not be checksummed over and handed to the application.
    let lab = lab();
    let (a, b) = (&lab.hosts[0], &lab.hosts[1]);
    let port_b = lab.switch.ports()[1].name().to_owned();
    for (hook, port) in [(Hook::Egress, 5311), (Hook::Ingress, 5312)] {
        let (target, client, server, server_addr) = match hook {
            Hook::Egress => (&port_b, &a.ns, &b.ns, b.addr),
            Hook::Ingress => (&port_b, &b.ns, &a.ns, a.addr),
        };
        lab.switch
            .set_pipeline(target, hook, "impair corrupt 5% seed 3")
            .expect("set");
        let caught_before = vswitch_testkit::tcp_checksum_errors(server);
        let t = tcp_transfer(client, server, server_addr, port, 8 << 20).expect("tcp");
        let caught = vswitch_testkit::tcp_checksum_errors(server) - caught_before;
        let [(_, ingress), (_, egress)] = lab.switch.describe_pipelines(target).expect("describe");
        let stage = if hook == Hook::Egress {
            &egress
        } else {
            &ingress
        };
        assert!(
            !stage[0].contains("corrupted 0]"),
            "{hook:?}: nothing was corrupted: {stage:?}"
        );
        assert!(
            caught > 0,
            "{hook:?}: the receiver's stack caught no bad checksum"
        );
        assert_eq!(t.received, t.sent, "{hook:?}: bytes lost");
        assert_eq!(
            t.received_digest, t.sent_digest,
            "{hook:?}: corruption reached the application"
        );
        lab.switch.clear_pipeline(target, hook).expect("clear");
    }
}
