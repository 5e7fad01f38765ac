#!/usr/bin/env python3
"""Integration tests for the packaging: the systemd unit, the default config,
the man page, and the .deb that CPack builds from the build directory of the
binary under test.

The .deb is built with `cpack -G DEB -B <tmpdir>` (never into the source
tree) and inspected with dpkg-deb.  When the test runs as root and may create
a private mount namespace with an overlay over /, the package is also
installed, upgraded, removed and purged with the real dpkg inside a chroot
whose writes all land in a temporary overlay directory, and the installed
server is started as the cap-server user with the installed configuration.
Parts whose tools are missing print why they are skipped; the rest still
runs.
"""
import gzip
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from capsrv import BIN, ROOT, TOKEN  # noqa: E402
from captools import RawServer, clean_env, complete_log_lines, http, run_bin  # noqa: E402

PKG = os.path.join(ROOT, "packaging")
UNIT = os.path.join(PKG, "systemd", "cap-server.service")
MANPAGE = os.path.join(PKG, "cap-server.1")
CONFIG = os.path.join(PKG, "config.json")
PRESETS = os.path.join(PKG, "presets.json")
DEBDIR = os.path.join(PKG, "deb")

# The installed layout (docs: the layout contract shared with install.sh).
LAYOUT_CONFIG = {"host": "127.0.0.1", "port": 3001, "token_file": "/etc/cap-server/tokens",
                 "data_dir": "/var/lib/cap-server/objects",
                 "presets": "/etc/cap-server/presets.json", "log_level": "info"}
CONFFILES = ["/etc/cap-server/config.json", "/etc/cap-server/presets.json"]
# Path in the package -> expected mode.
PACKAGE_FILES = {
    "/usr/bin/cap-server": 0o755,
    "/usr/bin/cap-sandbox": 0o755,
    "/lib/systemd/system/cap-server.service": 0o644,
    "/etc/cap-server/config.json": 0o644,
    "/etc/cap-server/presets.json": 0o644,
    "/usr/share/man/man1/cap-server.1.gz": 0o644,
    "/usr/share/doc/cap-server/README.md": 0o644,
    "/usr/share/doc/cap-server/API.md": 0o644,
    "/usr/share/doc/cap-server/OPERATIONS.md": 0o644,
    "/usr/share/doc/cap-server/copyright": 0o644,
}
# Debian packages the binary needs at run time (the explicit Depends list).
RUNTIME_DEPENDS = ["libc6", "libuv1", "libcjson1", "libcurl4", "libssl3", "ffmpeg", "adduser"]
HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "RestrictNamespaces": "yes",
    "LockPersonality": "yes", "RestrictRealtime": "yes", "SystemCallArchitectures": "native",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet": "",
    "UMask": "0077", "AmbientCapabilities": "", "ProtectProc": "invisible",
    "ProtectHostname": "yes", "PrivateMounts": "yes", "PrivateIPC": "yes", "RemoveIPC": "yes",
    "KeyringMode": "private", "SystemCallErrorNumber": "EPERM",
    "ReadWritePaths": "/var/lib/cap-server",
}
# SystemCallFilter= lines of the unit, in order: the allow list, the Landlock
# calls systemd 252's @system-service lacks (the sandbox helper needs them),
# then the deny list.  @resources must stay allowed: the helper sets rlimits
# and priorities of every child.
SYSCALL_FILTER_ALLOW = ["@system-service"]
SYSCALL_FILTER_LANDLOCK = ["landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"]
SYSCALL_FILTER_DENY = ["@privileged", "@clock", "@debug", "@module", "@mount", "@obsolete",
                       "@raw-io", "@reboot", "@swap", "@cpu-emulation"]
# systemd-analyze security: the overall exposure the unit must stay at or
# under, and checks it must pass (names as systemd-analyze prints them).
SECURITY_MAX_EXPOSURE = 2.0
SECURITY_MUST_PASS = [
    "NoNewPrivileges=", "CapabilityBoundingSet=~CAP_SYS_ADMIN", "AmbientCapabilities=",
    "ProtectProc=", "ProtectHostname=", "PrivateMounts=", "RemoveIPC=", "KeyringMode=",
    "ProtectSystem=", "ProtectHome=", "PrivateTmp=", "RestrictNamespaces=~user",
    "RestrictAddressFamilies=~AF_PACKET", "RestrictAddressFamilies=~AF_NETLINK",
    "SystemCallArchitectures=",
    "SystemCallFilter=~@privileged", "SystemCallFilter=~@mount", "SystemCallFilter=~@debug",
    "SystemCallFilter=~@module", "SystemCallFilter=~@clock", "SystemCallFilter=~@raw-io",
    "LockPersonality=", "RestrictSUIDSGID=", "UMask=",
]
SKIP_EXIT = 77


def note(msg):
    """Says on stderr why part of the test does not run here."""
    sys.stderr.write("test_packaging: %s\n" % msg)
    sys.stderr.flush()


def run(argv, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("timeout", 120)
    return subprocess.run(argv, **kw)


def text(b):
    return b.decode("utf-8", "replace")


def project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        m = re.search(r"project\(\s*cap-server\s+VERSION\s+([0-9.]+)", f.read())
    assert m, "no project(cap-server VERSION ...) in CMakeLists.txt"
    return m.group(1)


def parse_unit(path):
    """A systemd unit as {section: {key: [values in order]}}."""
    units = {}
    section = None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = units.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            section.setdefault(key.strip(), []).append(value.strip())
    return units


def help_options():
    """The options `cap-server --help` lists: [(flag, env, default or None)].
    --help and --version come last, without an environment variable."""
    cwd = tempfile.mkdtemp(prefix="cappkg-help-")
    try:
        r = run_bin(["--help"], timeout=10, cwd=cwd)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    assert r.returncode == 0, r
    lines = text(r.stdout).splitlines()
    opts = []
    for i, line in enumerate(lines):
        m = re.match(r"^  (--[a-z0-9-]+)(?: VALUE)?(?:\s+(.*))?$", line)
        if not m:
            continue
        desc = m.group(2) or ""
        d = re.search(r" \[([^\]]*)\]$", desc)
        env = None
        if i + 1 < len(lines):
            e = re.match(r"^\s+env (\S+)$", lines[i + 1])
            env = e.group(1) if e else None
        opts.append((m.group(1), env, d.group(1) if d else None))
    return opts


def roff_plain(s):
    """Roff source to plain text, enough to search it: comments and font
    escapes go, zero-width escapes (\\& and the break point \\:) go, \\- becomes -, and font macros become their text (the
    alternating ones, like .BI, join their arguments without spaces)."""
    s = re.sub(r"\\f[BIRP]", "", s)
    s = s.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "").replace("\\:", "")
    out = []
    for line in s.splitlines():
        if line.startswith(".\\\""):
            continue
        m = re.match(r"^\.(B|I|BI|IB|BR|RB|IR|RI)(?:\s+(.*))?$", line)
        if m:
            args = [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', m.group(2) or "")]
            line = ("" if len(m.group(1)) == 2 else " ").join(args)
        out.append(line)
    return "\n".join(out)


def man_sections(src):
    """{section name: roff source of that section}."""
    parts = re.split(r"^\.SH\s+(.*)$", src, flags=re.M)
    return {parts[i].strip().strip('"'): parts[i + 1] for i in range(1, len(parts), 2)}


def man_option_entries(options_src):
    """The .TP entries of the OPTIONS section: [(flags in the tag line,
    plain text of the body)]."""
    entries = []
    chunks = re.split(r"^\.(?:TP|SS)\b.*$", options_src, flags=re.M)
    for chunk in chunks[1:]:
        lines = chunk.strip("\n").split("\n")
        if not lines or not lines[0].startswith("."):
            continue
        tag = roff_plain(lines[0])
        flags = re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", tag)
        body = " ".join(roff_plain("\n".join(lines[1:])).split())
        entries.append((flags, body))
    return entries


class TestUnitFile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.unit = parse_unit(UNIT)
        cls.svc = cls.unit["Service"]
        cls.defaults = {flag: d for flag, _, d in help_options()}

    def one(self, key, section="Service"):
        vals = self.unit[section].get(key)
        self.assertIsNotNone(vals, "%s= missing in [%s]" % (key, section))
        self.assertEqual(len(vals), 1, "%s= given more than once: %r" % (key, vals))
        return vals[0]

    def test_service_settings(self):
        self.assertEqual(self.one("Type"), "notify")
        self.assertEqual(self.one("NotifyAccess"), "main")
        self.assertEqual(self.one("User"), "cap-server")
        self.assertEqual(self.one("Group"), "cap-server")
        # Group membership comes from postinst/install.sh: a named group the
        # machine lacks would keep the unit from starting.
        self.assertNotIn("SupplementaryGroups", self.svc)
        # The drain lets running ffmpeg children finish: SIGTERM must reach
        # cap-server only.
        self.assertEqual(self.one("KillMode"), "mixed")
        self.assertEqual(self.one("StateDirectory"), "cap-server")
        # Optional ("-"): a local-store install without credentials starts.
        self.assertEqual(self.one("EnvironmentFile"), "-/etc/cap-server/env")
        self.assertEqual(self.one("ExecStart"),
                         "/usr/bin/cap-server --config /etc/cap-server/config.json")
        self.assertEqual(self.one("ExecReload"), "/bin/kill -HUP $MAINPID")
        self.assertEqual(self.one("KillSignal"), "SIGTERM")
        self.assertEqual(self.one("Restart"), "on-failure")
        self.assertEqual(self.one("RestartSec"), "2")
        self.assertEqual(self.one("LimitNOFILE"), "65536")

    def test_stop_timeout_above_drain(self):
        stop_s = int(self.one("TimeoutStopSec"))
        self.assertGreater(stop_s, 120)
        # The drain may take shutdown_grace_ms, then drain_linger_ms (when the
        # binary has it); systemd must not kill it sooner.  cancel_grace_ms
        # no longer delays anything (jobs are killed at once), but a config
        # may still set it: the sum keeps it, as a margin.
        with open(CONFIG) as f:
            cfg = json.load(f)
        parts = {}
        for key in ("shutdown_grace_ms", "cancel_grace_ms", "drain_linger_ms"):
            flag = "--" + key.replace("_", "-")
            if key in cfg or self.defaults.get(flag) is not None:
                parts[key] = int(cfg.get(key, self.defaults.get(flag)))
        self.assertIn("shutdown_grace_ms", parts)
        self.assertIn("cancel_grace_ms", parts)
        self.assertGreater(stop_s * 1000, sum(parts.values()),
                           "TimeoutStopSec=%d does not cover %r" % (stop_s, parts))

    def test_hardening(self):
        for key, want in HARDENING.items():
            self.assertEqual(self.one(key), want, key)
        # GPU device nodes must stay reachable: none of these may appear.
        for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow"):
            self.assertNotIn(key, self.svc, "%s= would hide /dev/dri and /dev/nvidia*" % key)
        self.assertNotEqual(self.svc.get("ProtectClock", ["no"])[-1], "yes",
                            "ProtectClock=yes implies a DeviceAllow= list")
        # CUDA (NVENC) reads /proc/driver/nvidia, the NVIDIA libraries map
        # W+X memory, and the GPU nodes open through the video/render groups.
        self.assertNotEqual(self.svc.get("ProcSubset", ["all"])[-1], "pid",
                            "ProcSubset=pid hides /proc/driver/nvidia")
        self.assertNotEqual(self.svc.get("MemoryDenyWriteExecute", ["no"])[-1], "yes")
        self.assertNotEqual(self.svc.get("PrivateUsers", ["no"])[-1], "yes")

    def test_syscall_filter(self):
        lines = self.svc.get("SystemCallFilter", [])
        allow = [w for ln in lines if not ln.startswith("~") for w in ln.split()]
        deny = [w for ln in lines if ln.startswith("~") for w in ln[1:].split()]
        self.assertEqual(allow[:1], SYSCALL_FILTER_ALLOW, "the allow list must come first")
        self.assertEqual(sorted(allow[1:]), sorted(SYSCALL_FILTER_LANDLOCK))
        self.assertEqual(sorted(deny), sorted(SYSCALL_FILTER_DENY))
        self.assertNotIn("@resources", deny, "the sandbox helper calls setrlimit/setpriority")

    def test_unit_and_install_sections(self):
        after = " ".join(self.unit["Unit"].get("After", [])).split()
        self.assertIn("network-online.target", after)
        self.assertIn("tailscaled.service", after)
        self.assertIn("network-online.target", " ".join(self.unit["Unit"].get("Wants", [])).split())
        docs = " ".join(self.unit["Unit"].get("Documentation", [])).split()
        self.assertIn("man:cap-server(1)", docs)
        self.assertEqual(self.one("WantedBy", "Install"), "multi-user.target")

    def test_config_matches_layout_and_unit(self):
        with open(CONFIG) as f:
            cfg = json.load(f)
        self.assertEqual(cfg, LAYOUT_CONFIG)
        # The local store must lie in the StateDirectory, the only writable
        # path under ProtectSystem=strict.
        self.assertTrue(cfg["data_dir"].startswith("/var/lib/%s/" % self.one("StateDirectory")))

    def test_packaged_config_starts_the_server(self):
        """The shipped config.json and presets.json load: the server starts
        from them (paths that need root are overridden) and drains cleanly."""
        tmp = tempfile.mkdtemp(prefix="cappkg-cfg-")
        try:
            tokens = os.path.join(tmp, "tokens")
            with open(tokens, "w") as f:
                f.write("# comment\nci:%s\n" % TOKEN)
            os.chmod(tokens, 0o600)
            log = os.path.join(tmp, "server.log")
            srv = RawServer(["--config", CONFIG, "--port", "0", "--token-file", tokens,
                             "--data-dir", os.path.join(tmp, "objects"), "--presets", PRESETS,
                             "--log-file", log], log, start_timeout=60)
            with srv:
                st, _, body = http(srv, "GET", "/health", token=None)
                self.assertEqual(st, 200, body)
                levels = {e.get("level") for e in complete_log_lines(srv.log_text())}
                self.assertNotIn("debug", levels, "config.json sets log_level info")
                srv.proc.send_signal(signal.SIGTERM)
                self.assertEqual(srv.proc.wait(60), 0)
            shutil.rmtree(srv.tmp, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class TestSystemdVerify(unittest.TestCase):
    def test_systemd_analyze_verify(self):
        if not shutil.which("systemd-analyze"):
            note("systemd-analyze not found (package systemd): skipping unit verification")
            self.skipTest("no systemd-analyze")
        tmp = tempfile.mkdtemp(prefix="cappkg-unit-")
        try:
            # verify checks that ExecStart's binary exists and that
            # man:cap-server(1) resolves, so point both at this checkout.
            with open(UNIT) as f:
                unit = f.read()
            self.assertIn("ExecStart=/usr/bin/cap-server ", unit)
            unit = unit.replace("ExecStart=/usr/bin/cap-server ", "ExecStart=%s " % BIN)
            path = os.path.join(tmp, "cap-server.service")
            with open(path, "w") as f:
                f.write(unit)
            os.makedirs(os.path.join(tmp, "man", "man1"))
            shutil.copy(MANPAGE, os.path.join(tmp, "man", "man1", "cap-server.1"))
            env = dict(os.environ, MANPATH=os.path.join(tmp, "man"))
            r = run(["systemd-analyze", "verify", path], env=env, timeout=120)
            err = text(r.stderr)
            self.assertEqual(r.returncode, 0, err)
            # verify reports bad keys and values as warnings with status 0.
            ours = [ln for ln in err.splitlines() if "cap-server" in ln or path in ln]
            self.assertEqual(ours, [], err)
            for ln in err.splitlines():
                if ln not in ours:
                    note("systemd-analyze (not about our unit): " + ln)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class TestSystemdSecurity(unittest.TestCase):
    """`systemd-analyze security --offline=true` on the unit as shipped (it
    reads the file only; no systemd needs to run, no user to exist)."""

    def test_exposure(self):
        if not shutil.which("systemd-analyze"):
            note("systemd-analyze not found (package systemd): skipping the exposure check")
            self.skipTest("no systemd-analyze")
        ver = run(["systemd-analyze", "--version"], timeout=30)
        m = re.match(r"systemd (\d+)", text(ver.stdout))
        if m and int(m.group(1)) < 250:
            note("systemd %s has no 'security --offline' (needs 250): skipping the exposure "
                 "check" % m.group(1))
            self.skipTest("systemd-analyze too old")
        # LC_ALL=C: "+"/"-" marks and "->" instead of the UTF-8 glyphs.
        env = dict(os.environ, LC_ALL="C", SYSTEMD_COLORS="0", SYSTEMD_PAGER="")
        env.pop("LANG", None)
        r = run(["systemd-analyze", "security", "--offline=true", "--no-pager", UNIT],
                env=env, timeout=120)
        out, err = text(r.stdout), text(r.stderr)
        self.assertEqual(r.returncode, 0, out + err)
        m = re.search(r"Overall exposure level for cap-server\.service: (\d+(?:\.\d+)?) (\S+)", out)
        self.assertIsNotNone(m, "no overall exposure line in:\n" + out + err)
        exposure = float(m.group(1))
        checks = {}
        for ln in out.splitlines():
            f = ln.split()
            if len(f) >= 2 and f[0] in ("+", "-"):
                checks[f[1]] = f[0] == "+"
        flagged = sorted(k for k, ok in checks.items() if not ok)
        note("systemd-analyze security: exposure %s %s; still flagged: %s"
             % (m.group(1), m.group(2), " ".join(flagged)))
        self.assertLessEqual(exposure, SECURITY_MAX_EXPOSURE,
                             "exposure %s above %s; flagged: %s"
                             % (exposure, SECURITY_MAX_EXPOSURE, flagged))
        for name in SECURITY_MUST_PASS:
            self.assertIn(name, checks, "systemd-analyze did not rate %s:\n%s" % (name, out))
            self.assertTrue(checks[name], "systemd-analyze flags %s" % name)
        # The key directives themselves, as written in the unit.
        with open(UNIT) as f:
            lines = [ln.strip() for ln in f]
        for want in ("ProtectProc=invisible", "SystemCallFilter=@system-service",
                     "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet="):
            self.assertIn(want, lines, "%s missing from the unit" % want)


class TestManPage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(MANPAGE) as f:
            cls.src = f.read()
        cls.sections = man_sections(cls.src)
        cls.entries = man_option_entries(cls.sections.get("OPTIONS", ""))
        cls.options = help_options()

    def test_sections(self):
        for name in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "SIGNALS",
                     "FILES", "EXIT STATUS", "SEE ALSO"):
            self.assertIn(name, self.sections, "section %s missing" % name)
        self.assertRegex(self.src, r"(?m)^\.TH CAP-SERVER 1 ")

    def test_every_help_option_documented(self):
        self.assertGreater(len(self.options), 40, "--help parsing found too few options")
        for flag, env, default in self.options:
            with self.subTest(flag=flag):
                bodies = [b for flags, b in self.entries if flag in flags]
                self.assertEqual(len(bodies), 1, "%s: %d entries under OPTIONS"
                                 % (flag, len(bodies)))
                body = bodies[0]
                if flag in ("--help", "--version"):
                    continue
                self.assertIsNotNone(env, "%s: no env line in --help" % flag)
                self.assertIn("Environment: %s." % env, body)
                if default is not None:
                    self.assertIn("Default: %s" % default, body)
                else:
                    self.assertIn("Default:", body)

    def test_no_stale_options(self):
        known = {flag for flag, _, _ in self.options} | {"-h"}
        documented = {f for flags, _ in self.entries for f in flags}
        self.assertEqual(documented - known, set(), "documented but not in --help")

    def test_environment_signals_files_exit(self):
        plain = {k: roff_plain(v) for k, v in self.sections.items()}
        for var in ("CAPABILITY_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                    "AWS_ENDPOINT_URL", "AWS_REGION", "R2_ACCOUNT_ID"):
            self.assertIn(var, plain["ENVIRONMENT"])
        for sig in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"):
            self.assertIn(sig, plain["SIGNALS"])
        for path in ("/usr/bin/cap-server", "/etc/cap-server/config.json",
                     "/etc/cap-server/presets.json", "/etc/cap-server/tokens",
                     "/etc/cap-server/env", "/var/lib/cap-server/objects",
                     "/lib/systemd/system/cap-server.service"):
            self.assertIn(path, plain["FILES"])
        self.assertRegex(self.sections["EXIT STATUS"], r"(?s)\.B 0\n.*\.B 1\n.*\.B 2\n")

    def test_exit_statuses_hold(self):
        """The statuses the man page names are the ones the binary uses."""
        tmp = tempfile.mkdtemp(prefix="cappkg-exit-")
        busy = socket.socket()
        try:
            r = run_bin(["--no-such-option"], token=TOKEN, timeout=30, cwd=tmp)
            self.assertEqual(r.returncode, 2, r)
            r = run_bin(["--port", "0"], token=None, timeout=30, cwd=tmp)
            self.assertEqual(r.returncode, 2, "no token must be a configuration error: %r" % (r,))
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            r = run_bin(["--port", str(busy.getsockname()[1]), "--data-dir",
                         os.path.join(tmp, "data"), "--log-file", os.path.join(tmp, "log")],
                        token=TOKEN, timeout=60, cwd=tmp)
            self.assertEqual(r.returncode, 1, "listening on a busy port: %r" % (r,))
        finally:
            busy.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def test_renders_without_warnings(self):
        ran = False
        if shutil.which("groff"):
            r = run(["groff", "-man", "-ww", "-z", MANPAGE])
            self.assertEqual((r.returncode, text(r.stderr)), (0, ""))
            ran = True
        else:
            note("groff not found (package groff-base): skipping groff -ww")
        if shutil.which("man"):
            env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
            r = run(["man", "--warnings", "-l", MANPAGE], env=env)
            self.assertEqual((r.returncode, text(r.stderr)), (0, ""))
            self.assertIn("--shutdown-grace-ms", text(r.stdout))
            ran = True
        else:
            note("man not found (package man-db): skipping man --warnings")
        if not ran:
            self.skipTest("neither groff nor man")


class TestDebPackage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.environ.get("CAP_SANITIZED"):
            # An instrumented binary needs the sanitizer runtimes and is not
            # what ships; the normal build's run checks the package.
            note("sanitized build: skipping the .deb checks")
            raise unittest.SkipTest("sanitized build")
        for tool in ("cpack", "dpkg-deb"):
            if not shutil.which(tool):
                note("%s not found: skipping the .deb checks" % tool)
                raise unittest.SkipTest("no " + tool)
        build = os.path.dirname(os.path.abspath(BIN))
        cpack_config = os.path.join(build, "CPackConfig.cmake")
        assert os.path.isfile(cpack_config), "%s missing: configure the build dir" % cpack_config
        cls.tmp = tempfile.mkdtemp(prefix="cappkg-deb-")
        # Class cleanups run even when setUpClass fails halfway.
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        before = set(os.listdir(ROOT)), set(os.listdir(PKG))
        # Plain cpack first builds the tree's "preinstall" target, which
        # rebuilds the binary when a source changed since the build, under
        # the other tests running it.  Naming a generator that has no such
        # target (the install step itself does not depend on the generator)
        # packages exactly the binary under test.
        r = run(["cpack", "-G", "DEB", "--config", cpack_config, "-B", cls.tmp,
                 "-D", "CPACK_CMAKE_GENERATOR=Ninja"], timeout=280)
        assert r.returncode == 0, text(r.stdout + r.stderr)
        assert "preinstall" not in text(r.stdout), text(r.stdout)
        after = set(os.listdir(ROOT)), set(os.listdir(PKG))
        # Only what cpack writes counts: other people may be editing the tree.
        cls.source_tree_changes = {
            n for n in (after[0] - before[0]) | (after[1] - before[1])
            if n.endswith(".deb") or n.startswith(("_CPack", "install_manifest", "packages"))}
        debs = [f for f in os.listdir(cls.tmp) if f.endswith(".deb")]
        assert len(debs) == 1, debs
        cls.deb = os.path.join(cls.tmp, debs[0])
        cls.extract = os.path.join(cls.tmp, "root")
        r = run(["dpkg-deb", "-x", cls.deb, cls.extract])
        assert r.returncode == 0, text(r.stderr)
        cls.control = os.path.join(cls.tmp, "control")
        r = run(["dpkg-deb", "-e", cls.deb, cls.control])
        assert r.returncode == 0, text(r.stderr)
        cls.version = project_version()

    def field(self, name):
        r = run(["dpkg-deb", "-f", self.deb, name])
        self.assertEqual(r.returncode, 0, text(r.stderr))
        return text(r.stdout).strip()

    def test_nothing_written_into_the_source_tree(self):
        self.assertEqual(self.source_tree_changes, set())

    def test_control_fields(self):
        self.assertEqual(self.field("Package"), "cap-server")
        self.assertEqual(self.field("Version"), self.version)
        arch = text(run(["dpkg", "--print-architecture"]).stdout).strip()
        self.assertEqual(self.field("Architecture"), arch)
        self.assertEqual(self.field("Maintainer"), "cap-server maintainers")
        self.assertEqual(self.field("Section"), "net")
        depends = [d.strip().split()[0] for d in self.field("Depends").split(",")]
        for pkg in RUNTIME_DEPENDS:
            self.assertIn(pkg, depends)
        info = text(run(["dpkg-deb", "-I", self.deb]).stdout)
        # dpkg-deb -I marks executable control members with "*".
        for script in ("postinst", "prerm", "postrm"):
            self.assertRegex(info, r"\n\s+\d+ bytes,\s+\d+ lines\s+\*\s+%s\s" % script)
        self.assertRegex(info, r"\n\s+\d+ bytes,\s+\d+ lines\s+conffiles\s")

    def test_depends_cover_needed_libraries(self):
        """Every shared library the binary links must come from a package in
        Depends, so the hand-written list cannot fall behind the code."""
        if not shutil.which("readelf") or not shutil.which("dpkg-query"):
            note("readelf or dpkg-query not found: skipping the DT_NEEDED check")
            self.skipTest("no readelf")
        r = run(["readelf", "-d", BIN])
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", text(r.stdout))
        self.assertTrue(needed, text(r.stdout))
        ldd = text(run(["ldd", BIN]).stdout)
        depends = {d.strip().split()[0] for d in self.field("Depends").split(",")}
        for soname in needed:
            with self.subTest(soname=soname):
                m = re.search(r"^\s*%s => (\S+)" % re.escape(soname), ldd, re.M)
                self.assertIsNotNone(m, "ldd does not resolve %s" % soname)
                path = os.path.realpath(m.group(1))
                owners = set()
                for cand in (path, re.sub(r"^/usr/lib/", "/lib/", path),
                             re.sub(r"^/lib/", "/usr/lib/", path)):
                    q = run(["dpkg-query", "-S", cand])
                    if q.returncode == 0:
                        for line in text(q.stdout).splitlines():
                            owners |= {o.strip().split(":")[0]
                                       for o in line.split(": ", 1)[0].split(",")}
                self.assertTrue(owners, "no package owns %s" % path)
                self.assertTrue(owners & depends, "%s (%s) comes from %s, not in Depends %s"
                                % (soname, path, owners, sorted(depends)))

    def test_contents_and_modes(self):
        r = run(["dpkg-deb", "-c", self.deb])
        self.assertEqual(r.returncode, 0, text(r.stderr))
        listing = {}
        for line in text(r.stdout).splitlines():
            parts = line.split()
            path = parts[-1][1:].rstrip("/") if parts[-1].startswith("./") else parts[-1]
            listing[path] = (parts[0], parts[1])
        for path, mode in PACKAGE_FILES.items():
            with self.subTest(path=path):
                self.assertIn(path, listing)
                perms, owner = listing[path]
                self.assertEqual(perms[0], "-")
                self.assertEqual(stat.filemode(stat.S_IFREG | mode), perms)
                self.assertEqual(owner, "root/root")
        # Secrets are never shipped, so dpkg never touches them.
        self.assertNotIn("/etc/cap-server/tokens", listing)
        self.assertNotIn("/etc/cap-server/env", listing)

    def test_conffiles(self):
        with open(os.path.join(self.control, "conffiles")) as f:
            self.assertEqual(sorted(f.read().split()), CONFFILES)

    def test_files_are_the_repository_copies(self):
        pairs = [("lib/systemd/system/cap-server.service", UNIT),
                 ("etc/cap-server/config.json", CONFIG), ("etc/cap-server/presets.json", PRESETS),
                 ("usr/share/doc/cap-server/README.md", os.path.join(ROOT, "README.md")),
                 ("usr/share/doc/cap-server/API.md", os.path.join(ROOT, "docs", "API.md")),
                 ("usr/share/doc/cap-server/OPERATIONS.md", os.path.join(ROOT, "docs", "OPERATIONS.md")),
                 ("usr/share/doc/cap-server/copyright", os.path.join(DEBDIR, "copyright"))]
        for inside, repo in pairs:
            with open(os.path.join(self.extract, inside), "rb") as a, open(repo, "rb") as b:
                self.assertEqual(a.read(), b.read(), inside)
        with gzip.open(os.path.join(self.extract, "usr/share/man/man1/cap-server.1.gz")) as a, \
                open(MANPAGE, "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_extracted_binary_runs(self):
        exe = os.path.join(self.extract, "usr/bin/cap-server")
        r = run([exe, "--help"], env=clean_env(), timeout=30)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("--config", text(r.stdout))
        r = run([exe, "--version"], env=clean_env(), timeout=30)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(text(r.stdout).strip(), "cap-server " + self.version)
        if shutil.which("readelf"):
            sections = text(run(["readelf", "-S", "-W", exe]).stdout)
            self.assertNotIn(".debug_info", sections, "the packaged binary is not stripped")

    def test_maintainer_scripts(self):
        for name in ("postinst", "prerm", "postrm"):
            with self.subTest(script=name):
                path = os.path.join(self.control, name)
                mode = stat.S_IMODE(os.stat(path).st_mode)
                self.assertEqual(mode, 0o755)
                with open(path) as f:
                    body = f.read()
                self.assertTrue(body.startswith("#!/bin/sh\n"), name)
                self.assertRegex(body, r"(?m)^set -e$")
                r = run(["sh", "-n", path])
                self.assertEqual((r.returncode, text(r.stderr)), (0, ""))
                if shutil.which("dash"):
                    r = run(["dash", "-n", path])
                    self.assertEqual((r.returncode, text(r.stderr)), (0, ""))
        if shutil.which("shellcheck"):
            r = run(["shellcheck", "-s", "sh"] +
                    [os.path.join(self.control, n) for n in ("postinst", "prerm", "postrm")])
            self.assertEqual(r.returncode, 0, text(r.stdout + r.stderr))
        else:
            note("shellcheck not found (package shellcheck): skipping its check")

    def test_install_upgrade_remove_purge(self):
        """dpkg -i / -r / --purge in a throw-away overlay chroot."""
        if os.geteuid() != 0:
            note("not root: skipping the dpkg install test")
            self.skipTest("not root")
        if not shutil.which("unshare") or not shutil.which("chroot"):
            note("unshare or chroot not found (util-linux, coreutils): skipping dpkg install test")
            self.skipTest("no unshare")
        work = tempfile.mkdtemp(prefix="cappkg-chroot-")
        try:
            r = run(["unshare", "--mount", "--propagation", "private", sys.executable,
                     os.path.abspath(__file__), "--chroot-phase", work, self.deb, self.version],
                    env=clean_env(), timeout=280)
            out = text(r.stdout + r.stderr)
            if r.returncode == SKIP_EXIT:
                note("dpkg install test skipped: " + out.strip().splitlines()[-1])
                self.skipTest("no overlay mount")
            self.assertEqual(r.returncode, 0, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)


class ChrootPhase:
    """Runs inside a private mount namespace (see the test above): mounts an
    overlay of / on WORK/merged, so dpkg, adduser and the server change only
    WORK/upper, and drives the package through its life.  Failures raise
    AssertionError; the namespace, and with it every mount, goes away when
    this process exits."""

    def __init__(self, work, deb, version):
        self.work, self.version = work, version
        self.t0 = time.time()
        self.root = os.path.join(work, "merged")
        for d in ("upper", "work", "merged"):
            os.makedirs(os.path.join(work, d), exist_ok=True)
        r = run(["mount", "-t", "overlay", "overlay", "-o",
                 "lowerdir=/,upperdir=%s,workdir=%s" % (os.path.join(work, "upper"),
                                                        os.path.join(work, "work")), self.root])
        if r.returncode != 0:
            print("cannot mount an overlay over /: %s" % text(r.stderr).strip())
            sys.exit(SKIP_EXIT)
        for argv in (["mount", "-t", "proc", "proc", os.path.join(self.root, "proc")],
                     ["mount", "--rbind", "/dev", os.path.join(self.root, "dev")],
                     ["mount", "-t", "tmpfs", "tmpfs", os.path.join(self.root, "run")],
                     ["mount", "-t", "tmpfs", "tmpfs", os.path.join(self.root, "tmp")]):
            r = run(argv)
            assert r.returncode == 0, (argv, text(r.stderr))
        # The real /run says whether systemd runs here; the chroot must not
        # think so, or the postinst would talk to the host's systemd.
        assert not os.path.exists(os.path.join(self.root, "run/systemd/system"))
        shutil.copy(deb, os.path.join(self.root, "tmp", "cap-server.deb"))
        # man-db's trigger rebuilds the whole man database after each dpkg
        # run (seconds each); without this flag it skips that, in the
        # overlay only.
        flag = self.path("/var/lib/man-db/auto-update")
        if os.path.exists(flag):
            os.unlink(flag)

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))

    def sh(self, script, ok=True):
        r = run(["chroot", self.root, "/bin/sh", "-ec", script],
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
                     "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}, timeout=200)
        out = text(r.stdout + r.stderr)
        if ok:
            assert r.returncode == 0, "%s\n-> %d\n%s" % (script, r.returncode, out)
        return r.returncode, out

    def dpkg(self, *args):
        return self.sh("dpkg " + " ".join(args))[1]

    def stat(self, p):
        st = os.lstat(self.path(p))
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    def user_exists(self, name):
        return self.sh("getent passwd %s" % name, ok=False)[0] == 0

    def uid_gid(self, name):
        _, out = self.sh("id -u %s; id -g %s" % (name, name))
        u, g = out.split()
        return int(u), int(g)

    def check(self, cond, msg):
        if not cond:
            raise AssertionError(msg)
        print("ok (%5.1f s): %s" % (time.time() - self.t0, msg))

    def run_all(self):
        wants = "/etc/systemd/system/multi-user.target.wants/cap-server.service"
        # A first install on a machine without the user.
        self.check(not self.user_exists("cap-server"), "no cap-server user before")
        out = self.dpkg("-i", "/tmp/cap-server.deb")
        self.check(self.user_exists("cap-server"), "postinst created the user")
        uid, gid = self.uid_gid("cap-server")
        _, shell = self.sh("getent passwd cap-server | cut -d: -f6,7")
        self.check(shell.strip() == "/var/lib/cap-server:/usr/sbin/nologin",
                   "system user with home /var/lib/cap-server and no login: " + shell.strip())
        self.check(uid < 1000, "uid %d is a system uid" % uid)
        _, groups = self.sh("id -nG cap-server")
        for g in ("video", "render"):
            rc, _ = self.sh("getent group %s" % g, ok=False)
            if rc == 0:
                self.check(g in groups.split(), "cap-server is in group " + g)
        mode, u, g = self.stat("/etc/cap-server")
        self.check((mode, u, g) == (0o750, 0, gid), "/etc/cap-server is 0750 root:cap-server")
        self.check(os.path.islink(self.path(wants)), "the unit is enabled")
        self.check(os.path.isfile(self.path("/usr/bin/cap-server")), "binary installed")
        _, conf = self.sh("dpkg-query -W -f='${Conffiles}' cap-server")
        self.check(all(c in conf for c in CONFFILES), "dpkg registered both conffiles")
        self.check("systemctl start cap-server" in out and "openssl rand" in out,
                   "without a token the postinst explains how to create one")
        if shutil.which("systemd-analyze"):
            rc, v = self.sh("systemd-analyze verify /lib/systemd/system/cap-server.service",
                            ok=False)
            self.check(rc == 0 and "cap-server" not in v,
                       "the installed unit verifies (binary and man page found): " + v.strip())

        # A token file with only comments and blank lines is no token.
        with open(self.path("/etc/cap-server/tokens"), "w") as f:
            f.write("# comment only\n\n   \n")
        out = self.dpkg("-i", "/tmp/cap-server.deb")
        self.check("openssl rand" in out, "a comment-only token file does not count")

        # The commands the postinst printed create a working token file.
        os.unlink(self.path("/etc/cap-server/tokens"))
        cmds = [ln.strip() for ln in out.splitlines()
                if re.match(r"^\s+(install|openssl) ", ln)]
        self.check(len(cmds) == 2, "postinst printed the install and openssl commands")
        self.sh("\n".join(cmds))
        mode, u, g = self.stat("/etc/cap-server/tokens")
        self.check((mode, u, g) == (0o600, uid, gid), "tokens file is 0600 cap-server")
        out = self.dpkg("-i", "/tmp/cap-server.deb")
        self.check("openssl rand" not in out, "with a token the postinst prints no how-to")
        with open(self.path("/etc/cap-server/tokens")) as f:
            token = f.read().strip()
        self.serve(token)

        # Remove keeps the conffiles and the secrets; purge deletes them and
        # the state directory, and keeps the user.
        with open(self.path("/etc/cap-server/env"), "w") as f:
            f.write("CAP_STORAGE=file:///var/lib/cap-server/objects\n")
        self.dpkg("-r", "cap-server")
        self.check(not os.path.exists(self.path("/usr/bin/cap-server")), "remove: binary gone")
        self.check(not os.path.exists(self.path("/lib/systemd/system/cap-server.service")),
                   "remove: unit gone")
        for p in CONFFILES + ["/etc/cap-server/tokens", "/etc/cap-server/env"]:
            self.check(os.path.exists(self.path(p)), "remove keeps " + p)
        self.dpkg("--purge", "cap-server")
        self.check(not os.path.exists(self.path("/etc/cap-server")), "purge: /etc/cap-server gone")
        self.check(not os.path.exists(self.path("/var/lib/cap-server")),
                   "purge: /var/lib/cap-server gone")
        self.check(not os.path.lexists(self.path(wants)), "purge: enablement gone")
        self.check(self.user_exists("cap-server"), "purge keeps the user")

        # An install where the group exists but the user does not.
        self.sh("userdel cap-server; getent group cap-server >/dev/null || "
                "groupadd --system cap-server")
        self.dpkg("-i", "/tmp/cap-server.deb")
        _, grp = self.sh("id -gn cap-server")
        self.check(grp.strip() == "cap-server", "user created into the existing group")
        self.dpkg("--purge", "cap-server")

    def serve(self, token):
        """Runs the installed server as cap-server with the installed config,
        the way the unit does: READY=1 arrives, the token works, SIGTERM
        drains to exit 0 after STOPPING=1."""
        # systemd would create the StateDirectory.
        self.sh("install -d -m 0750 -o cap-server -g cap-server /var/lib/cap-server")
        sock_path = self.path("/run/cap-notify.sock")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(sock_path)
        os.chmod(sock_path, 0o777)
        ns.settimeout(1)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET": "/run/cap-notify.sock"}
        proc = subprocess.Popen(
            ["chroot", self.root, "setpriv", "--reuid=cap-server", "--regid=cap-server",
             "--init-groups", "/usr/bin/cap-server", "--config", "/etc/cap-server/config.json",
             "--port", "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            msgs = []
            deadline = time.time() + 60
            while time.time() < deadline and not any("READY=1" in m for m in msgs):
                try:
                    msgs.append(text(ns.recv(4096)))
                except socket.timeout:
                    assert proc.poll() is None, text(proc.communicate()[1])
            self.check(any("READY=1" in m for m in msgs), "READY=1 on $NOTIFY_SOCKET")
            port = None
            helper = None
            for raw in iter(proc.stdout.readline, b""):
                ev = json.loads(raw)
                if ev.get("event") == "sandbox.ready":
                    helper = ev.get("helper")
                if ev.get("event") == "server.start":
                    port = int(ev["port"])
                    break
            self.check(port is not None, "server.start logged on stdout (journald)")
            self.check(helper == "/usr/bin/cap-sandbox",
                       "children are sandboxed through the packaged cap-sandbox (got %r)" % helper)
            st, body = get(port, "/health")
            self.check(st == 200, "installed server answers /health")
            st, _ = get(port, "/jobs/AAAAAAAAAAAAAAAAAAAAAA", token="wrong" * 8)
            self.check(st == 401, "a wrong token is refused")
            secret = token.rpartition(":")[2]
            st, _ = get(port, "/jobs/AAAAAAAAAAAAAAAAAAAAAA", token=secret)
            self.check(st == 404, "the token from /etc/cap-server/tokens is accepted")
            self.check(os.path.isdir(self.path("/var/lib/cap-server/objects")),
                       "the local store lives in the state directory")
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(150)
            self.check(rc == 0, "SIGTERM drains and exits 0 (got %d)" % rc)
            try:
                while True:
                    msgs.append(text(ns.recv(4096)))
            except (socket.timeout, BlockingIOError):
                pass
            self.check(any("STOPPING=1" in m for m in msgs), "STOPPING=1 on $NOTIFY_SOCKET")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            ns.close()


def get(port, path, token=None):
    """One HTTP/1.1 GET; returns (status, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        req = "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % path
        if token:
            req += "Authorization: Bearer %s\r\n" % token
        s.sendall((req + "\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--chroot-phase":
        try:
            ChrootPhase(*sys.argv[2:5]).run_all()
        except AssertionError as e:
            print("FAIL: %s" % e)
            sys.exit(1)
        sys.exit(0)
    unittest.main()
