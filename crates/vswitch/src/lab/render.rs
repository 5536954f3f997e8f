//! Pictures of a lab: the text `lab show` prints, Graphviz DOT, and an SVG drawn here (so a
//! picture needs no Graphviz): switches in layers from the first one, hosts under their switch.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::state::{LabState, LinkState};
use super::topology::count;

/// Bits per second each way of a link, a→b and b→a, when the lab is running.
pub type Rates = HashMap<usize, (f64, f64)>;

fn rate(bps: f64) -> String {
    match bps {
        b if b >= 1e9 => format!("{:.2} Gbit/s", b / 1e9),
        b if b >= 1e6 => format!("{:.2} Mbit/s", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kbit/s", b / 1e3),
        b => format!("{b:.0} bit/s"),
    }
}

fn end(e: &super::state::EndState) -> String {
    format!("{}:{}", e.node, e.interface)
}

/// The text of `lab show`.
pub fn text(lab: &LabState, rates: Option<&Rates>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lab {}: {}, {}, {} via {}{}",
        lab.name,
        count(lab.switches.len(), "switch", "switches"),
        count(lab.hosts.len(), "host", "hosts"),
        count(lab.links.len(), "link", "links"),
        lab.attach,
        if lab.pid == 0 { " (not up)" } else { "" }
    );
    let _ = writeln!(out, "switches");
    for s in &lab.switches {
        let _ = writeln!(
            out,
            "  {:<12} control {:<20} {}",
            s.name,
            s.control,
            s.addresses.join(" ")
        );
    }
    let _ = writeln!(out, "hosts");
    for h in &lab.hosts {
        let _ = writeln!(
            out,
            "  {:<12} netns {:<22} {}",
            h.name,
            h.netns,
            h.addresses.join(" ")
        );
    }
    let _ = writeln!(out, "links");
    for (i, l) in lab.links.iter().enumerate() {
        let mut line = format!("  {:<22} -- {:<22}", end(&l.a), end(&l.b));
        if let Some(mtu) = l.mtu {
            let _ = write!(line, " mtu {mtu}");
        }
        if !l.a_to_b.is_empty() {
            let _ = write!(line, "  {}->{}: {}", l.a.node, l.b.node, l.a_to_b);
        }
        if !l.b_to_a.is_empty() {
            let _ = write!(line, "  {}->{}: {}", l.b.node, l.a.node, l.b_to_a);
        }
        for v in &l.vlan {
            let _ = write!(line, "  vlan {v}");
        }
        if let Some((ab, ba)) = rates.and_then(|r| r.get(&i)) {
            let _ = write!(line, "  [{} ->, <- {}]", rate(*ab), rate(*ba));
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz DOT: `vswitch lab show --dot | dot -Tpng > lab.png`.
pub fn dot(lab: &LabState) -> String {
    let mut out = format!("graph {} {{\n", dot_id(&lab.name));
    out.push_str("  node [fontname=\"Helvetica\"];\n");
    for s in &lab.switches {
        let label = std::iter::once(s.name.clone())
            .chain(s.addresses.iter().cloned())
            .collect::<Vec<_>>()
            .join("\\n");
        let _ = writeln!(
            out,
            "  {} [shape=box, style=filled, fillcolor=\"#dbe9f6\", label=\"{label}\"];",
            dot_id(&s.name)
        );
    }
    for h in &lab.hosts {
        let label = std::iter::once(h.name.clone())
            .chain(h.addresses.iter().cloned())
            .collect::<Vec<_>>()
            .join("\\n");
        let _ = writeln!(
            out,
            "  {} [shape=ellipse, label=\"{label}\"];",
            dot_id(&h.name)
        );
    }
    for l in &lab.links {
        let _ = writeln!(
            out,
            "  {} -- {} [label={}, taillabel={}, headlabel={}];",
            dot_id(&l.a.node),
            dot_id(&l.b.node),
            dot_id(&link_label(l)),
            dot_id(&l.a.interface),
            dot_id(&l.b.interface)
        );
    }
    out.push_str("}\n");
    out
}

fn link_label(l: &LinkState) -> String {
    let mut parts = vec![l.label.clone()];
    parts.extend(l.vlan.iter().cloned());
    parts.retain(|p| !p.is_empty());
    parts.join(", ")
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Where each node goes: switches in layers by hops from the first switch, each host in the
/// layer below its first switch, each layer spread evenly.
fn layout(lab: &LabState) -> (HashMap<String, (f64, f64)>, f64, f64) {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for start in &lab.switches {
        if depth.contains_key(start.name.as_str()) {
            continue;
        }
        depth.insert(&start.name, 0);
        let mut queue = std::collections::VecDeque::from([start.name.as_str()]);
        while let Some(s) = queue.pop_front() {
            order.push(s);
            for l in &lab.links {
                let next = match (l.a.is_switch && l.b.is_switch, l.a.node == s, l.b.node == s) {
                    (true, true, _) => &l.b.node,
                    (true, _, true) => &l.a.node,
                    _ => continue,
                };
                if !depth.contains_key(next.as_str()) {
                    depth.insert(next, depth[s] + 1);
                    queue.push_back(next);
                }
            }
        }
    }
    for h in &lab.hosts {
        let switch =
            lab.links
                .iter()
                .find_map(|l| match (l.a.node == h.name, l.b.node == h.name) {
                    (true, _) => Some(l.b.node.as_str()),
                    (_, true) => Some(l.a.node.as_str()),
                    _ => None,
                });
        let d = switch.and_then(|s| depth.get(s)).map_or(0, |d| d + 1);
        depth.insert(&h.name, d);
        order.push(&h.name);
    }
    let layers = depth.values().max().map_or(1, |d| d + 1);
    let mut rows: Vec<Vec<&str>> = vec![Vec::new(); layers];
    for n in order {
        rows[depth[n]].push(n);
    }
    let widest = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (dx, dy) = (120.0, 110.0);
    let width = widest as f64 * dx + 40.0;
    let height = layers as f64 * dy + 40.0;
    let mut at = HashMap::new();
    for (r, row) in rows.iter().enumerate() {
        let step = width / (row.len() as f64 + 1.0);
        for (k, n) in row.iter().enumerate() {
            at.insert(
                (*n).to_owned(),
                (step * (k as f64 + 1.0), 50.0 + r as f64 * dy),
            );
        }
    }
    (at, width, height)
}

/// A standalone SVG picture of the lab.
pub fn svg(lab: &LabState) -> String {
    let (at, width, height) = layout(lab);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"Helvetica, sans-serif\" font-size=\"11\">\n<title>lab {}</title>\n",
        xml(&lab.name)
    );
    for l in &lab.links {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(&l.a.node), at.get(&l.b.node)) else {
            continue;
        };
        let label = link_label(l);
        let color = if label.is_empty() { "#555" } else { "#c0392b" };
        let _ = writeln!(
            out,
            "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{color}\" stroke-width=\"2\"/>"
        );
        if !label.is_empty() {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\" text-anchor=\"middle\">{}</text>",
                (x1 + x2) / 2.0,
                (y1 + y2) / 2.0 - 4.0,
                xml(&label)
            );
        }
    }
    for s in &lab.switches {
        let Some(&(x, y)) = at.get(&s.name) else {
            continue;
        };
        let _ = writeln!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"80\" height=\"30\" rx=\"4\" fill=\"#dbe9f6\" stroke=\"#2c5d8a\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x - 40.0,
            y - 15.0,
            y + 4.0,
            xml(&s.name)
        );
    }
    for h in &lab.hosts {
        let Some(&(x, y)) = at.get(&h.name) else {
            continue;
        };
        let _ = writeln!(
            out,
            "<ellipse cx=\"{x:.1}\" cy=\"{y:.1}\" rx=\"42\" ry=\"16\" fill=\"#fff\" stroke=\"#333\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666\" font-size=\"9\">{}</text>",
            y + 1.0,
            xml(&h.name),
            y + 30.0,
            xml(h.addresses.first().map_or("", String::as_str))
        );
    }
    out.push_str("</svg>\n");
    out
}
