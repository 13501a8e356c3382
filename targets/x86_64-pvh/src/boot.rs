//! From QEMU's PVH entry to Rust, and the AP trampoline.
//!
//! - The ELF note `Xen`/18 (`XEN_ELFNOTE_PHYS32_ENTRY`) names `pvh_start32`.
//! - `pvh_start32` runs in 32-bit protected mode with paging off (`ebx` = the
//!   PVH start info). It identity-maps the first GiB with 2 MiB pages in the
//!   boot tables below, sets CR4.PAE (and CR4.LA57 when CPUID says the CPU has
//!   5-level paging: before paging is enabled, as the SDM requires), EFER.LME
//!   and EFER.NXE, enables paging and far-jumps to 64-bit code, which calls
//!   `kmain_bsp(start_info, la57)`. The kernel then builds its real tables with
//!   pagepin's builder and switches CR3 to them.
//! - The AP trampoline is copied to [`TRAMPOLINE`] (below 1 MiB) and entered by
//!   a SIPI in 16-bit real mode: protected mode, CR4 (PAE, LA57 as the BSP
//!   chose), CR3 = the kernel's tables, EFER, paging, long mode, then the
//!   stack and entry the BSP left in the trampoline's data.

use core::arch::global_asm;

/// Where the AP trampoline runs (SIPI vector `TRAMPOLINE >> 12`).
pub const TRAMPOLINE: u64 = 0x8000;

/// EFER: LME (bit 8) and NXE (bit 11).
const EFER_BITS: u32 = (1 << 8) | (1 << 11);
/// CR4.PAE.
const CR4_PAE: u32 = 1 << 5;
/// CR4.LA57.
const CR4_LA57: u32 = 1 << 12;
/// CR0: PG, WP, PE.
const CR0_BITS: u32 = (1 << 31) | (1 << 16) | 1;

global_asm!(
    r#"
    .section .note.xen, "a"
    .p2align 2
    .long 4                      /* namesz: "Xen\0" */
    .long 8                      /* descsz: the 64-bit entry address */
    .long 18                     /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .quad pvh_start32

    .section .bss.boot, "aw", @nobits
    .p2align 12
boot_pml5: .skip 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4096
    .p2align 4
boot_stack: .skip 65536
boot_stack_top:

    .section .data.boot, "aw"
    .p2align 3
    .global pvh_start_info
pvh_start_info: .quad 0
    .global boot_la57
boot_la57: .long 0

    /* The GDT: null, 64-bit code (0x08), flat data (0x10), 32-bit code (0x18). */
    .p2align 4
    .global gdt64
gdt64:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00cf9a000000ffff
gdt64_end:
    .p2align 3
gdt64_ptr:
    .word gdt64_end - gdt64 - 1
    .quad gdt64

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, pvh_start_info
    movl $boot_stack_top, %esp

    /* boot_pd: 512 x 2 MiB, identity, P | RW | PS. */
    movl $boot_pd, %edi
    movl $0x83, %eax
    xorl %ecx, %ecx
1:  movl %eax, (%edi,%ecx,8)
    movl $0, 4(%edi,%ecx,8)
    addl $0x200000, %eax
    incl %ecx
    cmpl $512, %ecx
    jne 1b
    movl $boot_pd, %eax
    orl $3, %eax
    movl %eax, boot_pdpt
    movl $boot_pdpt, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl $boot_pml4, %eax
    orl $3, %eax
    movl %eax, boot_pml5

    /* 5-level paging when CPUID.(EAX=7,ECX=0):ECX.LA57[bit 16]. */
    xorl %eax, %eax
    cpuid
    cmpl $7, %eax
    jb 2f
    movl $7, %eax
    xorl %ecx, %ecx
    cpuid
    testl $(1 << 16), %ecx
    jz 2f
    movl $1, boot_la57
2:
    movl %cr4, %eax
    orl ${cr4_pae}, %eax
    cmpl $0, boot_la57
    je 3f
    orl ${cr4_la57}, %eax
3:  movl %eax, %cr4
    movl $boot_pml4, %eax
    cmpl $0, boot_la57
    je 4f
    movl $boot_pml5, %eax
4:  movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl ${efer}, %eax
    wrmsr
    movl %cr0, %eax
    orl ${cr0}, %eax
    movl %eax, %cr0
    lgdt gdt64_ptr
    ljmp $0x08, $long_entry

    .code64
long_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    movl pvh_start_info, %edi
    movl boot_la57, %esi
    call kmain_bsp
5:  hlt
    jmp 5b

    /* The AP trampoline: copied to {tramp} and entered in real mode. Every
     * absolute address inside it is `label - ap_tramp_start + {tramp}`. */
    .code16
    .global ap_tramp_start
ap_tramp_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (tramp_gdt_ptr - ap_tramp_start + {tramp})
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x18, $(tramp32 - ap_tramp_start + {tramp})

    .code32
tramp32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl ${cr4_pae}, %eax
    cmpl $0, (tramp_la57 - ap_tramp_start + {tramp})
    je 1f
    orl ${cr4_la57}, %eax
1:  movl %eax, %cr4
    movl (tramp_cr3 - ap_tramp_start + {tramp}), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl ${efer}, %eax
    wrmsr
    movl %cr0, %eax
    orl ${cr0}, %eax
    movl %eax, %cr0
    ljmp $0x08, $(tramp64 - ap_tramp_start + {tramp})

    .code64
tramp64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movq (tramp_stack - ap_tramp_start + {tramp}), %rsp
    movq (tramp_entry - ap_tramp_start + {tramp}), %rax
    jmp *%rax

    .p2align 3
tramp_gdt_ptr:
    .word gdt64_end - gdt64 - 1
    .long gdt64
    .p2align 3
    .global tramp_la57
tramp_la57: .long 0
    .global tramp_cr3
tramp_cr3: .long 0
    .p2align 3
    .global tramp_stack
tramp_stack: .quad 0
    .global tramp_entry
tramp_entry: .quad 0
    .global ap_tramp_end
ap_tramp_end:
    .text
"#,
    tramp = const TRAMPOLINE,
    cr4_pae = const CR4_PAE,
    cr4_la57 = const CR4_LA57,
    efer = const EFER_BITS,
    cr0 = const CR0_BITS,
    options(att_syntax)
);

unsafe extern "C" {
    /// The first byte of the trampoline (in the kernel image, before the copy).
    pub static ap_tramp_start: u8;
    /// The byte past the trampoline.
    pub static ap_tramp_end: u8;
    /// Trampoline data: nonzero for 5-level paging.
    pub static tramp_la57: u8;
    /// Trampoline data: the CR3 an AP loads (32 bits: the tables are below 4 GiB).
    pub static tramp_cr3: u8;
    /// Trampoline data: the AP's stack top.
    pub static tramp_stack: u8;
    /// Trampoline data: the 64-bit entry the AP jumps to.
    pub static tramp_entry: u8;
    /// The first byte of the kernel image.
    pub static __kernel_start: u8;
    /// The first byte past the kernel image (bss included).
    pub static __kernel_end: u8;
}

/// The address `sym` (a label inside the trampoline) has once the trampoline is
/// copied to [`TRAMPOLINE`].
pub fn in_trampoline(sym: *const u8) -> u64 {
    let start = &raw const ap_tramp_start;
    TRAMPOLINE + (sym as u64 - start as u64)
}
