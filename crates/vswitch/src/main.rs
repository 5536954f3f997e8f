//! The `vswitch` command: run a switch, a demo or a lab of namespaces, and plumb namespaces.

/// Huge pages behind the MAC table (see `vswitch_datapath::hugepage`).
#[global_allocator]
static ALLOCATOR: vswitch_datapath::HugePageAlloc = vswitch_datapath::HugePageAlloc;

fn main() -> std::process::ExitCode {
    vswitch::main()
}
