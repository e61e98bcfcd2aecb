"""Cortex-M builds of generated libraries: sizes from compiled objects and QEMU runs.

Toolchain: Debian's ``gcc-arm-none-eabi`` + ``libnewlib-arm-none-eabi`` and
``qemu-system-arm`` (``apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi
qemu-system-arm``). Boards: ``mps2-an386`` (Cortex-M4), ``mps2-an500`` (Cortex-M7),
``mps2-an505`` (Cortex-M33). Programs use the minimal startup file and linker script in
``cortexm_files/``, print through semihosting (newlib's rdimon) and read/write their inputs and
outputs as host files through semihosting.

Instruction counts: SysTick runs from the 25 MHz system clock; under ``-icount shift=0`` QEMU
advances virtual time by 1 ns per executed instruction, so SysTick ticks are a count of
instructions (40 per tick). Every run calibrates the ratio with a loop of known instruction
count. These are *instructions*, not cycles: QEMU does not model pipelines, wait states or
memory latency.

Sizes (:func:`library_sizes`): the library's objects are compiled with ``-Os
-ffunction-sections -fdata-sections``, linked into a probe program with ``--gc-sections``; the
linker map gives the bytes each retained input section of the library takes (flash: text,
rodata, data; RAM: data, bss); the worst-case stack of ``tfc_<name>_invoke`` comes from the
compiler's call graph with stack usage (``-fcallgraph-info=su``).
"""

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfcompress.codegen import build
from tfcompress.codegen.graph import CodegenError

HERE = Path(__file__).resolve().parent / "cortexm_files"
FPU = {"cortex-m4": "fpv4-sp-d16", "cortex-m7": "fpv5-d16", "cortex-m33": "fpv5-sp-d16"}
BOARDS = {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500", "cortex-m33": "mps2-an505"}
MEMORY = {  # flash origin, flash length, RAM origin, RAM length
    "cortex-m4": (0x00000000, 0x400000, 0x20000000, 0x400000),
    "cortex-m7": (0x00000000, 0x400000, 0x20000000, 0x400000),
    "cortex-m33": (0x10000000, 0x400000, 0x38000000, 0x200000),
}
OPT = "-Os"


def cpu_flags(cpu):
    if cpu not in FPU:
        raise ValueError(f"cpu must be one of {', '.join(FPU)}, got {cpu!r}.")
    return [f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=hard", f"-mfpu={FPU[cpu]}"]


def toolchain_available():
    """(available, reason) for the Arm cross compiler and QEMU."""
    missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(t) is None]
    if missing:
        return False, (f"{', '.join(missing)} not found; apt-get install -y gcc-arm-none-eabi "
                       "libnewlib-arm-none-eabi qemu-system-arm")
    return True, ""


# ---------------------------------------------------------------- map and call-graph parsing
_SECTION_RE = re.compile(r"^ (\.[\w.$]+|COMMON)\s*(?:0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(.+))?$")
_ADDR_RE = re.compile(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(.+)$")


def parse_map(text, objects):
    """Bytes per section kind (text/rodata/data/bss) of input sections from ``objects``."""
    names = {Path(o).name for o in objects}
    start = text.find("Linker script and memory map")
    lines = text[start:].splitlines() if start >= 0 else []
    sizes = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    pending = None
    for line in lines:
        if pending is not None:
            m = _ADDR_RE.match(line)
            if m:
                _add(sizes, pending, int(m.group(2), 16), m.group(3), names)
            pending = None
            continue
        m = _SECTION_RE.match(line)
        if not m:
            continue
        if m.group(2) is None:
            pending = m.group(1)
        else:
            _add(sizes, m.group(1), int(m.group(3), 16), m.group(4), names)
    return sizes


def _add(sizes, section, size, owner, names):
    owner = owner.strip()
    if owner.endswith(")") and "(" in owner:  # archive member: lib.a(member.o)
        base = owner[owner.rindex("(") + 1:-1]
    else:
        base = Path(owner).name
    if base not in names or size == 0:
        return
    if section.startswith(".text"):
        sizes["text"] += size
    elif section.startswith(".rodata"):
        sizes["rodata"] += size
    elif section.startswith((".data", ".sdata")):
        sizes["data"] += size
    elif section.startswith((".bss", ".sbss")) or section == "COMMON":
        sizes["bss"] += size


def parse_callgraph(ci_files):
    """(stack bytes per function, call edges) from gcc ``-fcallgraph-info=su`` files."""
    stack, edges = {}, {}
    node_re = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
    edge_re = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
    for f in ci_files:
        text = Path(f).read_text(errors="replace")
        for title, label in node_re.findall(text):
            m = re.search(r"(\d+) bytes \((static|dynamic|dynamic,bounded)\)", label)
            if m:
                stack[title] = max(stack.get(title, 0), int(m.group(1)))
        for src, dst in edge_re.findall(text):
            edges.setdefault(src, set()).add(dst)
    return stack, edges


def worst_stack(root, stack, edges):
    """Largest sum of frame sizes along call paths from ``root`` (no recursion expected)."""
    memo = {}

    def visit(fn, seen):
        if fn in memo:
            return memo[fn]
        best = 0
        for callee in edges.get(fn, ()):
            if callee in seen:
                continue
            best = max(best, visit(callee, seen | {callee}))
        memo[fn] = stack.get(fn, 0) + best
        return memo[fn]

    roots = [t for t in stack if t == root or t.endswith(":" + root)]
    return max((visit(r, {r}) for r in roots), default=0)


# ---------------------------------------------------------------- builds
def _sources(lib):
    return [lib.path / f for f in lib.c_files]


def _compile_lib(lib, workdir, cc, flags, cmsis_nn, cmsis_root=None):
    """Compile the library's sources (+ CMSIS-NN archive) into ``workdir``; returns (objects,
    ci files, extra link inputs)."""
    obj_dir = Path(workdir) / "lib"
    obj_dir.mkdir(parents=True, exist_ok=True)
    extra_flags = list(flags)
    includes = [lib.path]
    link = []
    if cmsis_nn:
        arch, root = build.cmsis_archive(cc, [f for f in flags if not f.startswith("-W")]
                                         + ["-fcallgraph-info=su"],
                                         cmsis_root, tag=_tag(cc, flags))
        extra_flags.append("-DTFC_USE_CMSIS_NN")
        includes.append(root / "Include")
        link.append(arch)
    objs = build.compile_objects(_sources(lib), obj_dir, cc,
                                 [*extra_flags, "-fcallgraph-info=su"], includes=includes)
    cis = [o.with_suffix(".ci") for o in objs]
    cis = [c for c in cis if c.is_file()]
    return objs, cis, link


def _tag(cc, flags):
    arch = "-".join(f for f in flags if f.startswith("-m"))
    return re.sub(r"[^A-Za-z0-9]+", "-", Path(cc).name + "-" + arch)[:60]


def _probe_main(lib):
    n = lib.name
    return f"""#include "{n}.h"
static float tfc_probe_in[{n.upper()}_INPUT_SIZE], tfc_probe_out[{n.upper()}_OUTPUT_SIZE];
int main(void) {{ return tfc_{n}_invoke(tfc_probe_in, tfc_probe_out); }}
"""


def library_sizes(lib, *, cmsis_nn=False, cmsis_root=None):
    """Flash/RAM/stack of ``lib`` compiled for ``lib.cpu`` (the host compiler for ``"host"``).

    Returns a dict: ``text``, ``rodata``, ``data``, ``bss`` (bytes of the library's own
    objects, and CMSIS-NN's when used), ``flash_bytes`` (text + rodata + data),
    ``stack_bytes`` (call-graph worst case of ``tfc_<name>_invoke``), ``ram_bytes`` (data +
    bss + stack), ``cpu``, ``compiler``, ``flags``.
    """
    host = lib.cpu == "host"
    cc = build.find_tool("gcc" if host else "arm-none-eabi-gcc")
    flags = [*build.WARNINGS, OPT, "-ffunction-sections", "-fdata-sections"]
    if not host:
        flags = cpu_flags(lib.cpu) + flags
    work = Path(tempfile.mkdtemp(prefix="tfc-size-"))
    try:
        objs, cis, link = _compile_lib(lib, work, cc, flags, cmsis_nn, cmsis_root)
        (work / "probe.c").write_text(_probe_main(lib))
        map_file = work / "probe.map"
        cmd = [cc, *[f for f in flags if f != "-Werror"], f"-I{lib.path}", str(work / "probe.c")]
        if host:
            cmd += [*map(str, objs), *map(str, link), "-lm", f"-Wl,--gc-sections,-Map={map_file}",
                    "-o", str(work / "probe")]
        else:
            fo, fl, ro, rl = MEMORY[lib.cpu]
            cmd += [str(HERE / "startup.c"), *map(str, objs), *map(str, link),
                    "--specs=nano.specs", "--specs=rdimon.specs", "-nostartfiles",
                    f"-Wl,--gc-sections,-Map={map_file},-T,{HERE / 'mps2.ld'}",
                    f"-Wl,--defsym=FLASH_ORIGIN={fo},--defsym=FLASH_LENGTH={fl}",
                    f"-Wl,--defsym=RAM_ORIGIN={ro},--defsym=RAM_LENGTH={rl}",
                    "-o", str(work / "probe.elf")]
        build._run(cmd, what="size probe link")
        owners = [*objs]
        if link:
            owners += _archive_members(link[0])
        sizes = parse_map(map_file.read_text(errors="replace"), owners)
        if cmsis_nn and link:
            cis += list(Path(link[0]).parent.glob("*.ci"))
        stack, edges = parse_callgraph(cis)
        sizes["stack_bytes"] = worst_stack(f"tfc_{lib.name}_invoke", stack, edges)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sizes["flash_bytes"] = sizes["text"] + sizes["rodata"] + sizes["data"]
    sizes["ram_bytes"] = sizes["data"] + sizes["bss"] + sizes["stack_bytes"]
    sizes.update({"cpu": lib.cpu, "compiler": Path(cc).name, "flags": " ".join(flags),
                  "cmsis_nn": bool(cmsis_nn)})
    return sizes


def _archive_members(archive):
    ar = shutil.which("ar") or "ar"
    r = subprocess.run([ar, "t", str(archive)], capture_output=True, text=True)
    return [m for m in r.stdout.split() if m]


# ---------------------------------------------------------------- QEMU
RUNNER = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "@NAME@.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

extern void *sbrk(int incr);
volatile uint32_t tfc_wraps;
void SysTick_Handler(void) { tfc_wraps++; }

#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)

static uint32_t ticks(void) {
  uint32_t w1, v, w2, pend;
  do {
    w1 = tfc_wraps;
    v = SYST_CVR;
    pend = SCB_ICSR & (1u << 26); /* PENDSTSET: wrapped, handler not run yet */
    w2 = tfc_wraps;
  } while (w1 != w2);
  if (pend && v > 0x800000u) w1 += 1;
  return w1 * 0x1000000u + (0xFFFFFFu - v);
}

static unsigned char in_buf[@UP@_INPUT_BYTES], out_buf[@UP@_OUTPUT_BYTES];
uint32_t tfc_marks[@STEPS@], tfc_mark_on;

int main(void) {
  FILE *fi = fopen("input.bin", "rb"), *fo = fopen("output.bin", "wb");
  FILE *ft = fopen("ticks.bin", "wb");
  uint32_t n = 0, t0, t1, calib, sp, stack_used = 0;
  uint32_t *p, *lo, *hi;
  volatile uint32_t k = 0;
  int rc = 0;
  if (!fi || !fo || !ft) { printf("TFC_ERROR files\n"); return 2; }
  SYST_RVR = 0xFFFFFFu; SYST_CVR = 0; SYST_CSR = 7u;
  for (k = 0; k < 100000u && SYST_CVR == 0; k = k + 1) {} /* wait for the first reload */
  /* calibration: 2^20 iterations of a 2-instruction loop */
  t0 = ticks();
  __asm volatile("mov r0, #0x100000\n1: subs r0, r0, #1\n bne 1b\n" ::: "r0", "cc");
  t1 = ticks();
  calib = t1 - t0;
  (void)k;
  while (fread(in_buf, 1, sizeof(in_buf), fi) == sizeof(in_buf)) {
    if (n == 0) {
      __asm volatile("mov %0, sp" : "=r"(sp));
      lo = (uint32_t *)(((uintptr_t)sbrk(0) + 1024u) & ~3u);
      hi = (uint32_t *)((sp - 64u) & ~3u);
      for (p = lo; p < hi; ++p) *p = 0xDEADBEEFu;
    }
    tfc_mark_on = n == 0;
    t0 = ticks();
    rc = tfc_@NAME@_invoke_raw(in_buf, out_buf);
    t1 = ticks();
    if (n == 0) {
      int s;
      printf("TFC_STEPS");
      for (s = 0; s < @STEPS@; ++s)
        printf(" %lu", (unsigned long)(tfc_marks[s] - (s ? tfc_marks[s - 1] : t0)));
      printf("\n");
      for (p = lo; p < hi && *p == 0xDEADBEEFu; ++p) {}
      stack_used = sp - (uint32_t)(uintptr_t)p;
    }
    if (rc != 0) { printf("TFC_ERROR invoke %d\n", rc); return 3; }
    t1 -= t0;
    fwrite(out_buf, 1, sizeof(out_buf), fo);
    fwrite(&t1, 4, 1, ft);
    ++n;
  }
  fclose(fo); fclose(ft); fclose(fi);
  printf("TFC_RESULT n=%lu calib_ticks=%lu stack=%lu\n", (unsigned long)n, (unsigned long)calib,
         (unsigned long)stack_used);
  return 0;
}
"""


# Per-step timing hooks for the profiled build of <name>.c: inline (no call frame), so the
# measured stack is the model's own.
PROFILE_H = r"""
#include <stdint.h>
extern volatile uint32_t tfc_wraps;
extern uint32_t tfc_marks[], tfc_mark_on;
static inline __attribute__((always_inline)) uint32_t tfc_prof_ticks(void) {
  uint32_t w1, v, w2, pend;
  do {
    w1 = tfc_wraps;
    v = *(volatile uint32_t *)0xE000E018u;
    pend = *(volatile uint32_t *)0xE000ED04u & (1u << 26);
    w2 = tfc_wraps;
  } while (w1 != w2);
  if (pend && v > 0x800000u) w1 += 1;
  return w1 * 0x1000000u + (0xFFFFFFu - v);
}
#define TFC_PROFILE_MARK(s) do { if (tfc_mark_on) tfc_marks[s] = tfc_prof_ticks(); } while (0)
"""


@dataclass
class QemuResult:
    """One QEMU run of a generated library.

    Attributes:
        outputs: raw outputs, one row per example (model output dtype).
        instructions: instructions per inference (array), from SysTick under
            ``-icount shift=0``; ``None`` without icount.
        instructions_per_tick: the calibrated SysTick ratio (40 on MPS2 at 25 MHz).
        stack_bytes: stack used by the first inference (painted-stack high-water mark).
        step_instructions: instructions of each scheduled step of the first inference (the
            schedule is ``lib.meta["schedule"]``).
        cpu, board, cmsis_nn, elf_sizes (text/data/bss of the whole program), wall_seconds.
    """

    outputs: np.ndarray
    instructions: np.ndarray
    instructions_per_tick: float
    stack_bytes: int
    cpu: str
    board: str
    cmsis_nn: bool
    elf_sizes: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    log: str = ""
    step_instructions: np.ndarray = None


def build_elf(lib, workdir, *, cpu, cmsis_nn=False, cmsis_root=None, opt=OPT):
    """Cross-compile ``lib`` with the QEMU runner into ``workdir/prog.elf``."""
    cc = build.find_tool("arm-none-eabi-gcc")
    flags = cpu_flags(cpu) + [*build.WARNINGS, opt, "-ffunction-sections", "-fdata-sections"]
    work = Path(workdir)
    objs, _, link = _compile_lib(lib, work, cc, flags, cmsis_nn, cmsis_root)
    runner = (RUNNER.replace("@NAME@", lib.name).replace("@UP@", lib.name.upper())
              .replace("@STEPS@", str(max(1, len(lib.meta["schedule"])))))
    (work / "runner.c").write_text(runner)
    fo, fl, ro, rl = MEMORY[cpu]
    elf = work / "prog.elf"
    (work / "profile.h").write_text(PROFILE_H)
    objs = [o for o in objs if o.stem != lib.name]
    prof_flags = [*flags, "-include", str(work / "profile.h")]
    objs += build.compile_objects([lib.path / f"{lib.name}.c"], work / "prof", cc, prof_flags,
                                  includes=[lib.path])
    cmd = [cc, *cpu_flags(cpu), "-std=c99", opt, f"-I{lib.path}", str(work / "runner.c"),
           str(HERE / "startup.c"), *map(str, objs), *map(str, link),
           "--specs=nano.specs", "--specs=rdimon.specs", "-nostartfiles",
           f"-Wl,--gc-sections,-T,{HERE / 'mps2.ld'}",
           f"-Wl,--defsym=FLASH_ORIGIN={fo},--defsym=FLASH_LENGTH={fl}",
           f"-Wl,--defsym=RAM_ORIGIN={ro},--defsym=RAM_LENGTH={rl}", "-o", str(elf)]
    build._run(cmd, what="Cortex-M link")
    return elf


def run_qemu(lib, raw_inputs, *, cpu="cortex-m4", cmsis_nn=False, icount=True, timeout=1800,
             cmsis_root=None):
    """Run ``raw_inputs`` (model input dtype, first axis = examples) through ``lib`` on the
    emulated ``cpu``; returns a :class:`QemuResult`."""
    import time

    ok, why = toolchain_available()
    if not ok:
        raise CodegenError(why)
    qemu = build.find_tool("qemu-system-arm")
    work = Path(tempfile.mkdtemp(prefix="tfc-qemu-"))
    try:
        elf = build_elf(lib, work, cpu=cpu, cmsis_nn=cmsis_nn, cmsis_root=cmsis_root)
        x = np.ascontiguousarray(raw_inputs)
        x.tofile(work / "input.bin")
        cmd = [qemu, "-M", BOARDS[cpu], "-nographic", "-monitor", "none", "-serial", "none",
               "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
        if icount:
            cmd[1:1] = ["-icount", "shift=0"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        log = r.stdout + r.stderr
        m = re.search(r"TFC_RESULT n=(\d+) calib_ticks=(\d+) stack=(\d+)", log)
        steps = re.search(r"TFC_STEPS([ \d]*)", log)
        if r.returncode != 0 or not m:
            raise CodegenError(f"QEMU run failed (exit {r.returncode}): {log[-2000:]}")
        n = int(m.group(1))
        out_dtype = np.dtype(lib.output["dtype"])
        out_size = int(np.prod(lib.output["shape"]))
        outputs = np.fromfile(work / "output.bin", out_dtype).reshape(n, out_size)
        ticks = np.fromfile(work / "ticks.bin", np.uint32)[:n].astype(np.float64)
        per_tick = 2.0 * (1 << 20) / max(int(m.group(2)), 1)
        size = subprocess.run([build.find_tool("arm-none-eabi-size"), "-A", str(elf)],
                              capture_output=True, text=True).stdout
        elf_sizes = {k: int(v) for k, v, *_ in (ln.split() for ln in size.splitlines()
                                                 if ln.startswith((".text", ".data", ".bss")))}
        step_instr = (np.array([float(v) for v in steps.group(1).split()]) * per_tick
                      if (steps and icount) else None)
        return QemuResult(outputs, ticks * per_tick if icount else None,
                          per_tick if icount else None, int(m.group(3)), cpu, BOARDS[cpu],
                          bool(cmsis_nn), elf_sizes, wall, log, step_instr)
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["BOARDS", "QemuResult", "build_elf", "cpu_flags", "library_sizes", "parse_callgraph",
           "parse_map", "run_qemu", "toolchain_available", "worst_stack"]
