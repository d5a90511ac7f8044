//! Tests of bpf.rs against the real kernel (root): real sockets on 127.0.0.1 and ::1.
use super::*;

#[test]
fn jumps_count_ld_imm64_as_two_slots() {
    let map = std::fs::File::open("/dev/null").unwrap();
    let mut asm = Asm::new();
    asm.jump_if_eq_imm(Reg::R1, 0, "end") // 0
        .op2(Insn::ld_map_fd(Reg::R2, map.as_fd())) // 1, 2
        .op(Insn::mov64_imm(Reg::R0, 1)) // 3
        .label("end")
        .op(Insn::exit()); // 4
    let insns = asm.finish().unwrap();
    assert_eq!(insns.len(), 5);
    assert_eq!(insns[0].off, 3, "0 + 1 + 3 = 4, the exit");
    assert_eq!(insns[1].regs, 0x12, "dst r2, src BPF_PSEUDO_MAP_FD");
}

#[test]
fn backward_jumps_are_negative() {
    let mut asm = Asm::new();
    asm.label("top").op(Insn::mov64_imm(Reg::R0, 1)).goto("top");
    assert_eq!(asm.finish().unwrap()[1].off, -2);
}

#[test]
fn unknown_and_duplicate_labels_are_reported() {
    let mut asm = Asm::new();
    asm.goto("nowhere");
    assert_eq!(asm.finish(), Err(AsmError::UnknownLabel("nowhere")));
    let mut asm = Asm::new();
    asm.label("x").label("x");
    assert_eq!(asm.finish(), Err(AsmError::DuplicateLabel("x")));
}

#[test]
fn encodings_match_the_kernel() {
    // Values as printed by the kernel's own BPF_* macros (include/linux/filter.h).
    assert_eq!(Insn::mov64_reg(Reg::R6, Reg::R1).code, 0xbf);
    assert_eq!(Insn::mov64_reg(Reg::R6, Reg::R1).regs, 0x16);
    assert_eq!(Insn::ldx_w(Reg::R9, Reg::R6, 32).code, 0x61);
    assert_eq!(Insn::stx_w(Reg::R10, -4, Reg::R7).code, 0x63);
    assert_eq!(Insn::st_w(Reg::R10, -4, 0).code, 0x62);
    assert_eq!(Insn::call(Helper::SkSelectReuseport).code, 0x85);
    assert_eq!(Insn::exit().code, 0x95);
    assert_eq!(Insn::mod64_reg(Reg::R9, Reg::R8).code, 0x9f);
}

#[test]
fn eperm_message_says_what_to_do() {
    let e = BpfError::new("load the BPF program \"x\"", Errno::EPERM);
    let text = e.to_string();
    assert!(
        text.starts_with("unable to load the BPF program \"x\": "),
        "{text}"
    );
    assert!(text.contains("CAP_BPF and CAP_NET_ADMIN"), "{text}");
}

#[test]
fn verifier_log_is_captured_on_refusal() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping verifier_log_is_captured_on_refusal: needs root for bpf(2)");
        return;
    }
    // Returns without setting R0: the verifier must refuse it and say why.
    let err =
        Program::load_sk_reuseport("bad", &[Insn::exit()], ReuseportAttach::Select).unwrap_err();
    assert_eq!(err.errno, Errno::EACCES);
    let log = err.verifier_log.as_deref().unwrap_or_default();
    assert!(log.contains("R0 !read_ok"), "log: {log}");
}
