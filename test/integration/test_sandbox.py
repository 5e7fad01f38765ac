#!/usr/bin/env python3
"""Integration tests (sandbox): the helper mode `cap-server --sandbox-exec`
that sits between fork and exec of every ffmpeg / ffprobe child, observed
through test/sandbox/sandbox-probe (CAP_SANDBOX_PROBE, set by ctest).

  * Landlock file rules (--ro, --rw, --dev, --ro-fd) at every ABI from 1 to
    what the kernel offers; TCP bind/connect from ABI 4 (--connect opens one
    port); signal and abstract-unix-socket scoping from ABI 6; --abi 0 as the
    control that shows the checks can fail;
  * no_new_privs and PR_SET_PDEATHSIG, --parent, exit codes 126 / 127;
  * every resource limit (--as-mb, --cpu-s, --fsize-mb, --nofile, --nproc
    as a non-root uid, --nice, --ionice);
  * the server: a running ffmpeg child dies with a SIGKILLed server, and
    --sandbox / --sandbox-abi show in the sandbox.ready log line and /health.

The Landlock classes skip (with the reason) only when the kernel has no
Landlock: the ABI comes from landlock_create_ruleset(NULL, 0,
LANDLOCK_CREATE_RULESET_VERSION)."""
import concurrent.futures
import ctypes
import os
import resource
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capsrv  # noqa: E402
import captools  # noqa: E402
import mediatools as mt  # noqa: E402
from capsrv import BIN  # noqa: E402

# The helper under test: cap-server itself in its --sandbox-exec mode, or,
# when CAP_SANDBOX_HELPER names it, the cap-sandbox binary the server
# prefers (ctest runs this file once for each).
HELPER = ([os.environ["CAP_SANDBOX_HELPER"]] if os.environ.get("CAP_SANDBOX_HELPER")
          else [BIN, "--sandbox-exec"])

PROBE = os.environ.get("CAP_SANDBOX_PROBE",
                       os.path.join(capsrv.ROOT, "build", "test", "sandbox-probe"))
PROBE_DIR = os.path.dirname(os.path.abspath(PROBE))

# What the probe (a dynamically linked C program) needs to be executed.
BASE_RO = ["/usr", "/lib", "/lib64", "/etc/ld.so.cache", PROBE_DIR]

HELPER_TIMEOUT = 10


# ---------------------------------------------------------------------------
# The kernel's Landlock ABI

# landlock_create_ruleset has the same number on every architecture that
# uses the generic syscall table (x86_64 and aarch64 included).
_SYS_LANDLOCK_CREATE_RULESET = {"alpha": 554}.get(platform.machine(), 444)
_LANDLOCK_CREATE_RULESET_VERSION = 1


def kernel_landlock_abi():
    """The Landlock ABI the running kernel offers; 0 when the call fails
    (no Landlock in the kernel, or disabled at boot)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    r = libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), ctypes.c_void_p(None),
                     ctypes.c_size_t(0), ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return int(r) if r > 0 else 0


KERNEL_ABI = kernel_landlock_abi()
NO_LANDLOCK = "the kernel offers no Landlock (landlock_create_ruleset version query failed)"


# ---------------------------------------------------------------------------
# Running the helper

class Run:
    def __init__(self, argv, rc, out, err, elapsed):
        self.argv, self.rc, self.out, self.err, self.elapsed = argv, rc, out, err, elapsed

    def __repr__(self):
        return "<rc=%r out=%r err=%r in %.2fs: %s>" % (self.rc, self.out, self.err[-600:],
                                                       self.elapsed, " ".join(self.argv))


def run(argv, pass_fds=(), timeout=HELPER_TIMEOUT):
    """Runs argv (list) to completion; returns a Run (rc negative: killed by
    that signal; None: still running after timeout, then killed)."""
    t0 = time.time()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, pass_fds=pass_fds,
                         env=captools.clean_env())
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        rc = None
    return Run(argv, rc, out.decode("utf-8", "replace").strip(),
               err.decode("utf-8", "replace"), time.time() - t0)


def helper_argv(abi, opts=(), probe_args=(), base_ro=True, program=None):
    """cap-server --sandbox-exec --abi ABI [--ro BASE]... OPTS -- PROBE ARGS."""
    argv = HELPER + ["--abi", str(abi)]
    if base_ro:
        for p in BASE_RO:
            argv += ["--ro", p]
    argv += list(opts)
    argv += ["--", program or PROBE] + [str(a) for a in probe_args]
    return argv


def probe(abi, opts=(), probe_args=(), pass_fds=(), timeout=HELPER_TIMEOUT, **kw):
    return run(helper_argv(abi, opts, probe_args, **kw), pass_fds=pass_fds, timeout=timeout)


def proc_alive(pid):
    """True while pid exists and is not a zombie."""
    st = mt._stat(pid)
    return st is not None and st[1] not in ("Z", "X")


def wait_gone(pid, timeout):
    deadline = time.time() + timeout
    while proc_alive(pid):
        if time.time() >= deadline:
            return False
        time.sleep(0.02)
    return True


def status_field(pid, name):
    try:
        with open("/proc/%d/status" % pid, "r", encoding="utf-8") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s, s.getsockname()[1]


def accepted(sock, timeout):
    """True when a connection arrives on the listening sock within timeout."""
    sock.settimeout(timeout)
    try:
        c, _ = sock.accept()
    except socket.timeout:
        return False
    c.close()
    return True


def write(path, data):
    with open(path, "w", encoding="utf-8") as f:
        f.write(data)
    return path


class Files:
    """Directories for one test, all outside every allowed path: outside/
    (a token file nobody is allowed to see), ro/ (a file under --ro), rw/
    (the --rw directory), fd/ (the --ro-fd input and its sibling)."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="capsb-")
        for d in ("outside", "ro", "rw", "fd"):
            os.makedirs(os.path.join(self.root, d))
        self.outside = os.path.join(self.root, "outside")
        self.ro = os.path.join(self.root, "ro")
        self.rw = os.path.join(self.root, "rw")
        self.fd = os.path.join(self.root, "fd")
        self.token = write(os.path.join(self.outside, "token"), "secret-token\n")
        self.ro_file = write(os.path.join(self.ro, "readable"), "readable\n")
        self.rw_file = write(os.path.join(self.rw, "existing"), "existing\n")
        self.input = write(os.path.join(self.fd, "input"), "input\n")
        self.sibling = write(os.path.join(self.fd, "sibling"), "sibling\n")
        for p in BASE_RO:
            ap = os.path.realpath(p)
            assert not os.path.realpath(self.root).startswith(ap.rstrip("/") + "/"), \
                "the temp dir %s is beneath an allowed path %s" % (self.root, p)

    def cleanup(self):
        shutil.rmtree(self.root, True)

    def opts(self):
        return ["--ro", self.ro, "--rw", self.rw]


def helper_works():
    r = run(HELPER + ["--abi", "0", "--", "/bin/true"])
    return r.rc == 0, r


# ---------------------------------------------------------------------------

class HelperBasics(unittest.TestCase):
    """What holds without Landlock: the control case, process attributes,
    exit codes."""

    def setUp(self):
        ok, r = helper_works()
        self.assertTrue(ok, "cap-server --sandbox-exec --abi 0 -- /bin/true: %r" % r)
        self.assertTrue(os.access(PROBE, os.X_OK), "no probe at %s (CAP_SANDBOX_PROBE)" % PROBE)
        self.f = Files()
        self.addCleanup(self.f.cleanup)

    def test_abi0_is_the_control(self):
        # Without Landlock the same reads and writes the Landlock tests
        # expect to fail do work, so those failures come from the sandbox.
        for args in (["read", "/etc/hostname"], ["read", self.f.token],
                     ["write", os.path.join(self.f.outside, "w")]):
            r = probe(0, self.f.opts(), args)
            self.assertEqual((r.rc, r.out), (0, "ok"), r)

    def test_no_new_privs_and_pdeathsig(self):
        abis = [0] + ([KERNEL_ABI] if KERNEL_ABI else [])
        for abi in abis:
            with self.subTest(abi=abi):
                r = probe(abi, (), ["privs"])
                self.assertEqual((r.rc, r.out), (0, "nnp=1 pdeathsig=%d" % signal.SIGKILL), r)

    def test_argv_unchanged(self):
        # The probe parses its argv strictly (exit 2 on anything else), and
        # /bin/sh shows $0 and its arguments exactly.
        r = run(helper_argv(0, (), ["-c", 'printf "%s|" "$0" "$@"', "zero", "a b", "", "--", "-x"],
                            program="/bin/sh"))
        self.assertEqual((r.rc, r.out), (0, "zero|a b||--|-x|"), r)

    def test_exec_failure_is_127(self):
        r = run(helper_argv(0, (), [], program="/nonexistent/sandbox-probe"))
        self.assertEqual(r.rc, 127, r)
        self.assertIn("cap-server sandbox:", r.err, r)

    def test_setup_failure_is_126(self):
        cases = {
            "no --abi": HELPER + ["--", PROBE, "nice"],
            "bad --abi": HELPER + ["--abi", "x", "--", PROBE, "nice"],
            "unknown option": HELPER + ["--abi", "0", "--no-such-option", "--",
                               PROBE, "nice"],
            "no program": HELPER + ["--abi", "0", "--"],
        }
        for name, argv in cases.items():
            with self.subTest(case=name):
                r = run(argv)
                self.assertEqual(r.rc, 126, r)
                self.assertEqual(r.out, "", "the program ran: %r" % r)
                self.assertTrue(any(l.startswith("cap-server sandbox:") for l in r.err.splitlines()),
                                "no 'cap-server sandbox:' line on stderr: %r" % r)

    def test_parent_mismatch_exits_at_once(self):
        # The helper's parent is this process; any other pid means the
        # server died between fork and the helper's start.
        r = probe(0, ["--parent", str(os.getpid())], ["sleep", "0"])
        self.assertEqual((r.rc, r.out), (0, "ok"), r)
        dead = subprocess.Popen(["/bin/true"])
        dead.wait()
        r = probe(0, ["--parent", str(dead.pid)], ["sleep", "0"])
        self.assertNotEqual(r.rc, 0, r)
        self.assertIsNotNone(r.rc, r)
        self.assertEqual(r.out, "", "the program ran although the parent did not match: %r" % r)
        self.assertLess(r.elapsed, 3, r)

    def test_pdeathsig_kills_the_program_when_its_parent_dies(self):
        # An intermediate parent starts the helper, reports the pid and is
        # then SIGKILLed: the program (after exec) must die with it.
        code = ("import subprocess, sys, time\n"
                "p = subprocess.Popen(sys.argv[1:])\n"
                "print(p.pid, flush=True)\n"
                "time.sleep(60)\n")
        argv = [sys.executable, "-c", code] + helper_argv(0, (), ["sleep", "30"])
        mid = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=captools.clean_env())
        self.addCleanup(mid.stdout.close)
        self.addCleanup(lambda: mid.poll() is None and (mid.kill(), mid.wait()))
        pid = int(mid.stdout.readline())
        self.addCleanup(lambda: proc_alive(pid) and os.kill(pid, signal.SIGKILL))
        deadline = time.time() + 5
        while (mt._stat(pid) or ("",))[0] != "sandbox-probe" and time.time() < deadline:
            time.sleep(0.02)
        self.assertEqual((mt._stat(pid) or ("gone",))[0], "sandbox-probe",
                         "the helper did not exec the probe")
        mid.kill()
        mid.wait()
        self.assertTrue(wait_gone(pid, 5), "the probe outlived its SIGKILLed parent by 5 s")


class Limits(unittest.TestCase):
    """Each resource limit bites (Landlock off, so that only the limit can
    make the action fail), each with a control run without it."""

    def setUp(self):
        ok, r = helper_works()
        self.assertTrue(ok, "cap-server --sandbox-exec --abi 0 -- /bin/true: %r" % r)
        self.f = Files()
        self.addCleanup(self.f.cleanup)

    def test_as_mb(self):
        r = probe(0, [], ["alloc", "256"])
        self.assertEqual((r.rc, r.out), (0, "ok"), r)
        r = probe(0, ["--as-mb", "64"], ["alloc", "256"])
        self.assertEqual((r.rc, r.out), (1, "ENOMEM"), r)
        r = probe(0, ["--as-mb", "64"], ["alloc", "8"])
        self.assertEqual((r.rc, r.out), (0, "ok"), r)

    def test_cpu_s(self):
        # The limit counts CPU time, so that is what is measured: on a busy
        # machine the wall-clock time of one CPU second varies a lot.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = probe(0, ["--cpu-s", "1"], ["burn"], timeout=20)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        self.assertIsNotNone(r.rc, "burn was not stopped within 20 s: %r" % r)
        self.assertIn(r.rc, (-signal.SIGXCPU, -signal.SIGKILL), r)
        # SIGXCPU at the 1 s soft limit; the hard limit (SIGKILL) is 5 s later.
        self.assertGreater(cpu, 0.8, (cpu, r))
        self.assertLess(cpu, 1.8, (cpu, r))

    def test_fsize_mb(self):
        path = os.path.join(self.f.rw, "big")
        r = probe(0, [], ["bigfile", path, "4"])
        self.assertEqual((r.rc, r.out), (0, "ok"), r)
        self.assertEqual(os.path.getsize(path), 4 << 20)
        r = probe(0, ["--fsize-mb", "1"], ["bigfile", path, "4"])
        self.assertTrue(r.rc == -signal.SIGXFSZ or (r.rc, r.out) == (1, "EFBIG"), r)
        self.assertLessEqual(os.path.getsize(path), 1 << 20)

    def test_nofile(self):
        r = probe(0, [], ["openmany", "64"])
        self.assertEqual((r.rc, r.out), (0, "ok"), r)
        r = probe(0, ["--nofile", "16"], ["openmany", "64"])
        self.assertEqual((r.rc, r.out), (1, "EMFILE"), r)

    def test_nproc_as_nobody(self):
        # The kernel ignores RLIMIT_NPROC for root: run the helper as nobody.
        setpriv = shutil.which("setpriv")
        if not setpriv:
            self.skipTest("setpriv (util-linux) is not installed: cannot run the helper as nobody")
        if os.geteuid() != 0:
            self.skipTest("not root: cannot switch to nobody")
        wrap = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        r = run(wrap + helper_argv(0, [], ["fork", "8"]))
        if r.rc == 126 or r.rc == 127 or "Permission denied" in r.err:
            self.fail("nobody cannot run %s or %s: %r" % (BIN, PROBE, r))
        self.assertEqual((r.rc, r.out), (0, "ok"), r)
        r = run(wrap + helper_argv(0, ["--nproc", "4"], ["fork", "8"]))
        self.assertEqual((r.rc, r.out), (1, "EAGAIN"), r)

    def test_nice(self):
        base = os.getpriority(os.PRIO_PROCESS, 0)
        r = probe(0, [], ["nice"])
        self.assertEqual((r.rc, r.out), (0, str(base)), r)
        if base < 10:
            r = probe(0, ["--nice", "10"], ["nice"])
            self.assertEqual((r.rc, r.out), (0, "10"), r)

    def test_ionice(self):
        for spec in ("2:7", "3:0"):
            with self.subTest(ionice=spec):
                r = probe(0, ["--ionice", spec], ["ionice"])
                self.assertEqual((r.rc, r.out), (0, spec), r)

    def test_limits_with_landlock(self):
        # The limits still apply when a Landlock ruleset is in force too.
        if not KERNEL_ABI:
            self.skipTest(NO_LANDLOCK)
        r = probe(KERNEL_ABI, ["--nofile", "16", "--dev", "/dev/null"], ["openmany", "64"])
        self.assertEqual((r.rc, r.out), (1, "EMFILE"), r)
        r = probe(KERNEL_ABI, ["--as-mb", "64"], ["alloc", "256"])
        self.assertEqual((r.rc, r.out), (1, "ENOMEM"), r)


@unittest.skipUnless(KERNEL_ABI, NO_LANDLOCK)
class Landlock(unittest.TestCase):

    def setUp(self):
        ok, r = helper_works()
        self.assertTrue(ok, "cap-server --sandbox-exec --abi 0 -- /bin/true: %r" % r)
        self.f = Files()
        self.addCleanup(self.f.cleanup)

    def expect(self, r, rc, out, what):
        self.assertEqual((r.rc, r.out), (rc, out), "%s: %r" % (what, r))

    def check_file_rules(self, abi):
        f = self.f
        o = f.opts() + ["--dev", "/dev/null"]
        self.expect(probe(abi, o, ["read", "/etc/hostname"]), 1, "EACCES", "read /etc/hostname")
        self.expect(probe(abi, o, ["read", f.token]), 1, "EACCES", "read a file outside")
        self.expect(probe(abi, o, ["read", f.ro_file]), 0, "ok", "read beneath --ro")
        self.expect(probe(abi, o, ["read", f.rw_file]), 0, "ok", "read beneath --rw")
        target = os.path.join(f.outside, "written-%d" % abi)
        self.expect(probe(abi, o, ["write", target]), 1, "EACCES", "write outside --rw")
        self.assertFalse(os.path.exists(target), "a file was created outside --rw")
        self.expect(probe(abi, o, ["write", f.ro_file]), 1, "EACCES", "write beneath --ro")
        with open(f.ro_file, encoding="utf-8") as fh:
            self.assertEqual(fh.read(), "readable\n")
        self.expect(probe(abi, o, ["mkfile", f.ro]), 1, "EACCES", "create beneath --ro")
        self.expect(probe(abi, o, ["remove", f.ro_file]), 1, "EACCES", "remove beneath --ro")
        self.assertTrue(os.path.exists(f.ro_file))
        target = os.path.join(f.rw, "written-%d" % abi)
        self.expect(probe(abi, o, ["write", target]), 0, "ok", "write beneath --rw")
        with open(target, encoding="utf-8") as fh:
            self.assertEqual(fh.read(), "sandbox-probe\n")
        r = probe(abi, o, ["mkfile", f.rw])
        self.assertEqual(r.rc, 0, "create beneath --rw: %r" % r)
        self.assertTrue(r.out.startswith("ok ") and os.path.isfile(r.out[3:]), r)
        self.expect(probe(abi, o, ["remove", target]), 0, "ok", "remove beneath --rw")
        self.assertFalse(os.path.exists(target))
        self.expect(probe(abi, o, ["write", "/dev/null"]), 0, "ok", "write a --dev node")
        self.expect(probe(abi, o, ["write", "/dev/zero"]), 1, "EACCES", "write a device not in --dev")

    def test_file_rules_at_every_abi(self):
        # The ABIs are independent (each writes its own file names): check
        # them side by side, then report each one as a subtest.
        abis = range(1, min(7, KERNEL_ABI) + 1)
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            futures = {abi: ex.submit(self.check_file_rules, abi) for abi in abis}
        for abi in abis:
            with self.subTest(abi=abi):
                futures[abi].result()

    def test_exec_needs_the_libraries_allowed(self):
        # Nothing under --ro: the kernel cannot even open the dynamic loader
        # for execve, so the program does not run.
        r = probe(1, [], ["nice"], base_ro=False)
        self.assertEqual(r.rc, 127, r)
        self.assertEqual(r.out, "", r)
        self.assertIn("cap-server sandbox:", r.err, r)

    def test_program_itself_is_allowed_but_not_its_directory(self):
        # The helper adds a rule for PROGRAM (an ffmpeg under /opt runs
        # without its directory under --ro), and for that one file only.
        d = os.path.join(self.f.root, "bin")
        os.makedirs(d)
        prog = os.path.join(d, "sandbox-probe")
        shutil.copy2(PROBE, prog)
        sibling = write(os.path.join(d, "sibling"), "sibling\n")
        argv = HELPER + ["--abi", "1"]
        for p in BASE_RO[:-1]:
            argv += ["--ro", p]
        r = run(argv + ["--", prog, "read", prog])
        self.assertEqual((r.rc, r.out), (0, "ok"), "run and read PROGRAM itself: %r" % r)
        r = run(argv + ["--", prog, "read", sibling])
        self.assertEqual((r.rc, r.out), (1, "EACCES"), "read a file next to PROGRAM: %r" % r)
        r = run(argv + ["--", prog, "remove", sibling])
        self.assertEqual((r.rc, r.out), (1, "EACCES"), "remove a file next to PROGRAM: %r" % r)
        self.assertTrue(os.path.exists(sibling))

    def test_missing_paths_are_skipped(self):
        o = self.f.opts() + ["--ro", "/nonexistent/ro-path", "--dev", "/dev/nonexistent-gpu"]
        r = probe(KERNEL_ABI, o, ["read", self.f.ro_file])
        self.assertEqual((r.rc, r.out), (0, "ok"), r)
        r = probe(KERNEL_ABI, o, ["read", "/etc/hostname"])
        self.assertEqual((r.rc, r.out), (1, "EACCES"), r)

    def test_ro_fd(self):
        fd = os.open(self.f.input, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        path = "/dev/fd/%d" % fd
        for abi in range(1, min(7, KERNEL_ABI) + 1):
            with self.subTest(abi=abi):
                o = ["--ro-fd", str(fd)]
                r = probe(abi, o, ["read", path], pass_fds=(fd,))
                self.assertEqual((r.rc, r.out), (0, "ok"), "read the --ro-fd input: %r" % r)
                r = probe(abi, o, ["read", self.f.sibling], pass_fds=(fd,))
                self.assertEqual((r.rc, r.out), (1, "EACCES"), "read the input's sibling: %r" % r)
                r = probe(abi, o, ["write", path], pass_fds=(fd,))
                self.assertEqual((r.rc, r.out), (1, "EACCES"), "write the --ro-fd input: %r" % r)
                # Without --ro-fd the same descriptor cannot be reopened.
                r = probe(abi, [], ["read", path], pass_fds=(fd,))
                self.assertEqual((r.rc, r.out), (1, "EACCES"), "read without --ro-fd: %r" % r)
        with open(self.f.input, encoding="utf-8") as fh:
            self.assertEqual(fh.read(), "input\n")

    def test_tcp_connect_and_bind(self):
        if KERNEL_ABI < 4:
            self.skipTest("the kernel's Landlock ABI %d has no TCP rules (4)" % KERNEL_ABI)
        ls, port = listener()
        self.addCleanup(ls.close)
        free = captools.free_port()
        for abi in range(4, min(7, KERNEL_ABI) + 1):
            with self.subTest(abi=abi, what="connect denied"):
                r = probe(abi, [], ["connect", port])
                self.assertEqual((r.rc, r.out), (1, "EACCES"), r)
                self.assertFalse(accepted(ls, 0.2), "the listener got a connection")
            with self.subTest(abi=abi, what="--connect"):
                r = probe(abi, ["--connect", str(port)], ["connect", port])
                self.assertEqual((r.rc, r.out), (0, "ok"), r)
                self.assertTrue(accepted(ls, 2), "the listener saw no connection")
            with self.subTest(abi=abi, what="other port than --connect"):
                r = probe(abi, ["--connect", str(free)], ["connect", port])
                self.assertEqual((r.rc, r.out), (1, "EACCES"), r)
                self.assertFalse(accepted(ls, 0.2), "the listener got a connection")
            with self.subTest(abi=abi, what="bind"):
                r = probe(abi, ["--connect", str(free)], ["bind", free])
                self.assertEqual((r.rc, r.out), (1, "EACCES"), r)
        # ABI 3 has no TCP rules: the same connect and bind work.
        r = probe(3, [], ["connect", port])
        self.assertEqual((r.rc, r.out), (0, "ok"), "connect at ABI 3: %r" % r)
        self.assertTrue(accepted(ls, 2), "the listener saw no connection at ABI 3")
        r = probe(3, [], ["bind", free])
        self.assertEqual((r.rc, r.out), (0, "ok"), "bind at ABI 3: %r" % r)

    def test_scoped_signals_and_abstract_sockets(self):
        if KERNEL_ABI < 6:
            self.skipTest("the kernel's Landlock ABI %d has no scopes (6)" % KERNEL_ABI)
        name = "capsb-%d-%d" % (os.getpid(), time.time_ns() % 1000000)
        us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(us.close)
        us.bind("\0" + name)
        us.listen(8)
        for abi in range(6, min(7, KERNEL_ABI) + 1):
            with self.subTest(abi=abi):
                r = probe(abi, [], ["kill", os.getpid()])
                self.assertEqual((r.rc, r.out), (1, "EPERM"), "kill(runner, 0): %r" % r)
                r = probe(abi, [], ["uconnect", name])
                self.assertEqual((r.rc, r.out), (1, "EPERM"), "abstract socket: %r" % r)
        r = probe(5, [], ["kill", os.getpid()])
        self.assertEqual((r.rc, r.out), (0, "ok"), "kill(runner, 0) at ABI 5: %r" % r)
        r = probe(5, [], ["uconnect", name])
        self.assertEqual((r.rc, r.out), (0, "ok"), "abstract socket at ABI 5: %r" % r)


# ---------------------------------------------------------------------------
# The server

def sandbox_ready(srv, timeout=5):
    return srv.wait_log(lambda l: l.get("event") == "sandbox.ready", timeout)


class ServerSandbox(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if os.environ.get("CAP_SANDBOX_HELPER"):
            raise unittest.SkipTest("the server's tests run once, in integration-sandbox")
        # One cheap preset: the start-up encoder probe of the built-in set
        # would double each server's start time.
        cls.tmp = tempfile.mkdtemp(prefix="capsb-srv-")
        cls.presets = mt.presets_file(cls.tmp, {"slow": mt.small_preset(realtime=True)})

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)

    def start(self, args):
        srv = capsrv.Server(["--presets", self.presets] + list(args))
        self.addCleanup(lambda: (capsrv.terminate(srv.proc), srv._close_pipes()))
        return srv

    def check_report(self, srv, mode, abi):
        line = sandbox_ready(srv)
        sb = mt.health(srv).get("sandbox")
        self.assertIsInstance(sb, dict, "no sandbox object in /health")
        for where, d in (("sandbox.ready", line), ("/health", sb)):
            self.assertEqual(d.get("mode"), mode, "%s: %r" % (where, d))
            self.assertEqual(d.get("landlock_abi"), abi, "%s: %r" % (where, d))
        self.assertIsInstance(sb.get("enforced"), list, "/health: %r" % sb)
        self.assertTrue(sb["enforced"], "/health: nothing enforced: %r" % sb)
        # The log has no arrays: the same list may come comma-separated.
        logged = line.get("enforced")
        if isinstance(logged, str):
            logged = [x for x in logged.split(",") if x]
        self.assertEqual(sorted(sb["enforced"]), sorted(logged or []), (sb, line))
        return sb

    def test_default_and_sandbox_abi_3(self):
        # By default the server applies what the kernel offers.
        full = self.start([])
        sbk = self.check_report(full, "best-effort", min(KERNEL_ABI, 7))
        srv = self.start(["--sandbox-abi", "3"])
        sb3 = self.check_report(srv, "best-effort", min(3, KERNEL_ABI))
        if KERNEL_ABI >= 4:
            # ABI 4 adds the TCP rules: the lower version enforces less.
            self.assertLess(set(sb3["enforced"]), set(sbk["enforced"]), (sb3, sbk))

    def slow_job_pid(self, srv):
        """Starts a slow render (about 20 s) and returns its ffmpeg pid."""
        mt.put(srv, "uploads/long.mp4", mt.clip(20.0, "160x120", audio=False))
        st, h, j = mt.exec_(srv, mt.render_body("uploads/long.mp4", "renders/long.mp4", "slow",
                                                wait=0))
        self.assertEqual(st, 202, j)
        pid = mt.wait_ffmpeg_pid(srv, j["job_id"], 20)
        self.addCleanup(lambda: proc_alive(pid) and os.kill(pid, signal.SIGKILL))
        # The pid is the helper's until it executes ffmpeg: wait for that,
        # so that what is read of it is ffmpeg's.
        deadline = time.time() + 10
        while time.time() < deadline and (mt._stat(pid) or ("",))[0] != "ffmpeg":
            time.sleep(0.02)
        return pid

    def test_sandbox_off(self):
        srv = self.start(["--sandbox", "off"])
        line = sandbox_ready(srv)
        sb = mt.health(srv).get("sandbox")
        self.assertEqual(line.get("mode"), "off", line)
        self.assertEqual(sb.get("mode"), "off", sb)
        # The control for test_ffmpeg_dies_with_the_server: children are
        # spawned directly, without the helper's no_new_privs.
        pid = self.slow_job_pid(srv)
        self.assertEqual(status_field(pid, "NoNewPrivs"), "0", "ffmpeg went through the helper")

    def test_required(self):
        if KERNEL_ABI:
            srv = self.start(["--sandbox", "required"])
            self.check_report(srv, "required", min(KERNEL_ABI, 7))
        else:
            r = captools.run_bin(["--port", "0", "--sandbox", "required"], token=capsrv.TOKEN)
            self.assertNotEqual(r.returncode, 0, r)
            self.assertIsNotNone(r.returncode, "started without Landlock: %r" % r)
            self.assertIn("sandbox", (r.stderr + r.stdout).decode("utf-8", "replace").lower(), r)

    def test_helper_beside_the_binary_or_self(self):
        # In the build tree cap-sandbox sits beside cap-server: the server
        # uses it.  A copy of cap-server alone re-executes itself instead;
        # both sandbox a job's children the same way.
        srv = self.start([])
        beside = os.path.join(os.path.dirname(os.path.abspath(BIN)), "cap-sandbox")
        self.assertEqual(sandbox_ready(srv).get("helper"), beside)
        self.assertEqual(mt.health(srv)["sandbox"].get("helper"), "cap-sandbox")
        alone = os.path.join(self.tmp, "alone")
        os.makedirs(alone, exist_ok=True)
        shutil.copy2(BIN, os.path.join(alone, "cap-server"))
        old = capsrv.BIN
        try:
            capsrv.BIN = os.path.join(alone, "cap-server")
            srv3 = capsrv.Server(["--presets", self.presets])
        finally:
            capsrv.BIN = old
        self.addCleanup(lambda: (capsrv.terminate(srv3.proc), srv3._close_pipes()))
        self.assertEqual(sandbox_ready(srv3).get("helper"), "/proc/self/exe --sandbox-exec")
        self.assertEqual(mt.health(srv3)["sandbox"].get("helper"), "self")
        pid = self.slow_job_pid(srv3)
        if KERNEL_ABI:
            self.assertEqual(status_field(pid, "NoNewPrivs"), "1", "ffmpeg without no_new_privs")

    def test_bad_mode_refused(self):
        r = captools.run_bin(["--port", "0", "--sandbox", "sometimes"], token=capsrv.TOKEN)
        self.assertIsNotNone(r.returncode, "started with --sandbox sometimes")
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn("sandbox", (r.stderr + r.stdout).decode("utf-8", "replace").lower(), r)

    def test_ffmpeg_dies_with_the_server(self):
        # (With --sandbox off the same ffmpeg outlives the SIGKILLed server
        # by more than 5 s: nothing but PR_SET_PDEATHSIG ends it this fast.)
        srv = mt.start(["--presets", self.presets])
        self.addCleanup(lambda: (capsrv.terminate(srv.proc), srv._close_pipes()))
        pid = self.slow_job_pid(srv)
        time.sleep(0.3)
        stat = mt._stat(pid)
        self.assertTrue(proc_alive(pid), "ffmpeg is not running before the kill: %r" % (stat,))
        self.assertEqual(stat[0], "ffmpeg", stat)
        self.assertEqual(stat[2], srv.proc.pid, "ffmpeg is not the server's child: %r" % (stat,))
        if KERNEL_ABI:
            # The child went through the helper (best-effort is the default).
            self.assertEqual(status_field(pid, "NoNewPrivs"), "1", "ffmpeg without no_new_privs")
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(5)
        self.assertTrue(wait_gone(pid, 5), "ffmpeg %d outlived the SIGKILLed server by 5 s" % pid)


if __name__ == "__main__":
    unittest.main(verbosity=2)
