"""Self-test of hlscheck.py and test/player (not run by ctest: the name is
not test_*.py).  Builds an HLS ladder with bare ffmpeg (720p + 360p H.264
and one AAC group; once as CMAF fMP4, once as MPEG-TS), writes a master in
cap-server's shape (BANDWIDTH / AVERAGE-BANDWIDTH computed here from the
files, independently of hlscheck), uploads both to the S3 bed, and runs
check_package, decode_all and play_in_browser with a forced level switch on
each.  Then shows that check_package fails on broken packages: a missing
segment, a too low or too high BANDWIDTH, a wrong RESOLUTION, a wrong
CODECS, a missing EXT-X-ENDLIST, a too small EXT-X-TARGETDURATION, an
unknown tag, a rendition whose keyframes are not aligned (-g 97 without
-force_key_frames), and one whose segments do not start on a keyframe
(split_by_time); that decode_all fails on a truncated segment; and that the
player fails on a missing segment.

    python3 test/integration/selftest_hlscheck.py [-v]

Needs ffmpeg; the S3 parts need the bed (scripts/setup-deps.sh test), the
browser parts Chromium and test/player/node_modules (same script).
"""
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hlscheck  # noqa: E402
from hlscheck import (FFMPEG, check_package, decode_all, dir_getter, dir_keys,  # noqa: E402
                      play_in_browser, s3_getter, s3_keys, serve)

DURATION = 20.0
BUCKET = "media"
TIMINGS = []


def _have_bed():
    try:
        from storagetools import have_bed
    except Exception:  # noqa: BLE001
        return False
    return have_bed()


def timed(label):
    class T:
        def __enter__(self):
            self.t0 = time.monotonic()

        def __exit__(self, *exc):
            TIMINGS.append((label, time.monotonic() - self.t0))
    return T()


def ffmpeg(*args):
    r = subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-y"] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError("ffmpeg failed: %s" % r.stderr[-2000:])


def make_source(path):
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=%g" % DURATION,
           "-f", "lavfi", "-i", "sine=frequency=440:duration=%g" % DURATION,
           "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-shortest", path)


def make_ladder(src, out, seg_type):
    """The brief's single-ffmpeg ladder: 720p + 360p + one AAC group."""
    ext = "m4s" if seg_type == "fmp4" else "ts"
    for d in ("720p", "360p", "audio"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    ffmpeg("-i", src, "-filter_complex",
           "[0:v:0]split=2[s0][s1];[s0]scale=-2:720[v0];[s1]scale=-2:360[v1]",
           "-map", "[v0]", "-c:v:0", "libx264", "-b:v:0", "2800k", "-maxrate:v:0", "3000k",
           "-bufsize:v:0", "4200k",
           "-map", "[v1]", "-c:v:1", "libx264", "-b:v:1", "800k", "-maxrate:v:1", "856k",
           "-bufsize:v:1", "1200k",
           "-preset", "veryfast", "-pix_fmt", "yuv420p", "-sc_threshold", "0",
           "-force_key_frames", "expr:gte(t,n_forced*4)",
           "-map", "0:a:0", "-c:a", "aac", "-b:a", "128k", "-ac", "2",
           "-f", "hls", "-hls_time", "4", "-hls_playlist_type", "vod",
           "-hls_segment_type", "fmp4" if seg_type == "fmp4" else "mpegts",
           "-hls_flags", "independent_segments+temp_file",
           "-hls_segment_filename", os.path.join(out, "%v", "seg_%05d." + ext),
           "-master_pl_name", "ffmpeg-master.m3u8",
           "-var_stream_map", "v:0,agroup:aud,name:720p v:1,agroup:aud,name:360p a:0,agroup:aud,name:audio",
           os.path.join(out, "%v", "index.m3u8"))
    # ffmpeg's own master (RESOLUTION and CODECS are taken from it) leaves
    # the package: cap-server writes its own.
    shutil.move(os.path.join(out, "ffmpeg-master.m3u8"), out + ".ffmpeg-master.m3u8")


def make_bad_360p(src, out, seg_type, split_by_time=False):
    """A 360p rendition with a fixed GOP of 97 frames and no forced
    keyframes: its segments cannot line up with the 4 s ones.  With
    split_by_time (MPEG-TS) ffmpeg cuts at 4 s anyway, between keyframes."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    ext = "m4s" if seg_type == "fmp4" else "ts"
    flags = "temp_file" + ("+split_by_time" if split_by_time else "")
    ffmpeg("-i", src, "-map", "0:v:0", "-vf", "scale=-2:360", "-c:v", "libx264", "-b:v", "800k",
           "-maxrate", "856k", "-bufsize", "1200k", "-preset", "veryfast", "-pix_fmt", "yuv420p",
           "-g", "97", "-keyint_min", "97", "-sc_threshold", "0",
           "-f", "hls", "-hls_time", "4", "-hls_playlist_type", "vod",
           "-hls_segment_type", "fmp4" if seg_type == "fmp4" else "mpegts", "-hls_flags", flags,
           "-hls_segment_filename", os.path.join(out, "seg_%05d." + ext),
           os.path.join(out, "index.m3u8"))


def ffmpeg_master_info(path):
    """{name: (RESOLUTION, CODECS)} from ffmpeg's master."""
    out, attrs = {}, None
    with open(path) as f:
        text = f.read()
    for line in text.splitlines():
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = line
        elif line and not line.startswith("#") and attrs:
            res = re.search(r"RESOLUTION=([0-9x]+)", attrs)
            codecs = re.search(r'CODECS="([^"]+)"', attrs).group(1)
            out[line.split("/")[0]] = (res.group(1) if res else None, codecs)
            attrs = None
    return out


def playlist_rates(pkg, name):
    """(peak, average) bits per second of one media playlist: segment bytes
    * 8 / EXTINF, the largest; all bytes * 8 / all EXTINF."""
    d = os.path.join(pkg, name)
    durs, sizes, dur = [], [], None
    with open(os.path.join(d, "index.m3u8")) as f:
        text = f.read()
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            dur = float(line[8:].split(",")[0])
        elif line and not line.startswith("#"):
            durs.append(dur)
            sizes.append(os.path.getsize(os.path.join(d, line)))
    return max(s * 8 / t for s, t in zip(sizes, durs)), sum(sizes) * 8 / sum(durs)


def edit(path, old, new):
    with open(path) as f:
        text = f.read()
    assert old in text, (path, old)
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def write_master(pkg, info, variants=("720p", "360p"), bandwidth=None, resolution=None,
                 codecs=None, extra_line=None):
    """cap-server's master: VERSION, INDEPENDENT-SEGMENTS, one audio group,
    a STREAM-INF per variant.  bandwidth / resolution / codecs: {name:
    value or callable(measured peak)} overrides for the negative cases."""
    bandwidth, resolution, codecs = bandwidth or {}, resolution or {}, codecs or {}
    a_peak, a_avg = playlist_rates(pkg, "audio")
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS",
             '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,'
             'URI="audio/index.m3u8"']
    if extra_line:
        lines.append(extra_line)
    for name in variants:
        v_peak, v_avg = playlist_rates(pkg, name)
        peak, avg = v_peak + a_peak, v_avg + a_avg
        bw = bandwidth.get(name, math.ceil(peak))
        bw = bw(peak) if callable(bw) else bw
        lines.append("#EXT-X-STREAM-INF:BANDWIDTH=%d,AVERAGE-BANDWIDTH=%d,RESOLUTION=%s,"
                     'CODECS="%s",AUDIO="aud"' % (bw, round(avg), resolution.get(name, info[name][0]),
                                                 codecs.get(name, info[name][1])))
        lines.append("%s/index.m3u8" % name)
    with open(os.path.join(pkg, "master.m3u8"), "w") as f:
        f.write("\n".join(lines) + "\n")


class HlsCheckSelfTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="hlsself-")
        cls.addClassCleanup(shutil.rmtree, cls.work, True)
        cls.src = os.path.join(cls.work, "in.mp4")
        with timed("encode 20 s 720p source"):
            make_source(cls.src)
        cls.pkg, cls.info = {}, {}
        for seg_type in ("fmp4", "ts"):
            out = os.path.join(cls.work, seg_type)
            with timed("ffmpeg ladder (%s)" % seg_type):
                make_ladder(cls.src, out, seg_type)
            cls.info[seg_type] = ffmpeg_master_info(out + ".ffmpeg-master.m3u8")
            write_master(out, cls.info[seg_type])
            cls.pkg[seg_type] = out
        cls.bed = None
        if _have_bed():
            from s3bed import S3Bed
            with timed("start S3 bed"):
                cls.bed = S3Bed().start()
            cls.addClassCleanup(cls.bed.stop)
            cls.bed.make_bucket(BUCKET)
            with timed("upload both packages (aws s3 cp --recursive)"):
                for seg_type, out in cls.pkg.items():
                    cls.bed.aws("s3", "cp", "--recursive", "--quiet", out,
                                "s3://%s/vod/%s/" % (BUCKET, seg_type))

    # --- helpers ------------------------------------------------------------

    def copy_pkg(self, seg_type, name):
        dst = os.path.join(self.work, "case-" + name)
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(self.pkg[seg_type], dst)
        return dst

    def assert_fails(self, pkg, *fragments, **kw):
        with timed("negative check: %s" % os.path.basename(pkg)):
            with self.assertRaises(AssertionError) as cm:
                check_package(dir_getter(pkg), "", source_duration=DURATION, **kw)
        msg = str(cm.exception)
        for frag in fragments:
            self.assertRegex(msg, frag)
        if "-v" in sys.argv:
            print("\n[%s] %s" % (os.path.basename(pkg), msg))
        return msg

    # --- the good packages, end to end ----------------------------------------

    def _good(self, seg_type, force_level):
        if self.bed is None:
            self.skipTest("S3 bed not installed: scripts/setup-deps.sh test")
        prefix = "vod/%s" % seg_type
        get = s3_getter(self.bed, BUCKET)
        with timed("check_package over S3 (%s)" % seg_type):
            summary = check_package(get, prefix, source_duration=DURATION,
                                    expect_renditions=[{"name": "720p", "width": 1280, "height": 720},
                                                       {"name": "360p", "width": 640, "height": 360}])
        self.assertEqual(summary["segment_type"], seg_type)
        self.assertEqual(s3_keys(self.bed, BUCKET, prefix + "/"), summary["keys"])
        self.assertEqual(summary["total_bytes"],
                         sum(os.path.getsize(os.path.join(self.pkg[seg_type], k[len(prefix) + 1:]))
                             for k in summary["keys"]))
        r720 = summary["renditions"][0]
        self.assertEqual(r720["codecs"], ["avc1.64001f", "mp4a.40.2"])
        self.assertEqual(r720["segments"], 5)
        self.assertEqual([a["name"] for a in summary["audio"]], ["audio"])
        with serve(get) as srv:
            with timed("decode_all via ffmpeg over HTTP (%s)" % seg_type):
                took = decode_all(srv.url(prefix + "/master.m3u8"))
        self.assertEqual(len(took), 3)
        ok, why = hlscheck.have_player()
        if not ok:
            self.skipTest(why)
        with timed("play_in_browser, forced switch to %d (%s)" % (force_level, seg_type)):
            res = play_in_browser("%s/%s/%s/master.m3u8" % (self.bed.endpoint, BUCKET, prefix),
                                  force_level=force_level, timeout=120, env=self.bed.env())
        self.assertTrue(res["ok"] and res["ended"] and res["switched"], res["reason"])
        self.assertTrue(res["signed"])
        self.assertEqual([(lv["width"], lv["height"]) for lv in res["levels"]], [(640, 360), (1280, 720)])
        self.assertIn(force_level, [x["level"] for x in res["level_switched"]])
        self.assertGreater(res["frag_buffered"].get(str(force_level), 0), 0)
        self.assertGreater(res["frag_buffered"].get(str(1 - force_level), 0), 0)
        self.assertGreater(res["audio_frag_buffered"], 0)
        self.assertGreater(res["decoded_frames"], 0)
        self.assertGreater(res["audio_decoded_bytes"], 0)
        self.assertEqual(res["fatal_errors"], 0)
        self.assertAlmostEqual(res["current_time"], DURATION, delta=0.5)
        self.assertEqual(res["http_errors"], [])
        if "-v" in sys.argv:
            print("\n[%s] %s" % (seg_type, {k: res[k] for k in (
                "wall_seconds", "level_switched", "frag_loaded", "frag_buffered", "decoded_frames",
                "dropped_frames", "audio_decoded_bytes", "mse_support")}))
            print("[%s] non-fatal hls.js errors: %s" % (seg_type, [e["details"] for e in res["errors"]]))

    def test_fmp4_package(self):
        self._good("fmp4", force_level=1)

    def test_ts_package(self):
        self._good("ts", force_level=0)

    def test_local_dir_and_summary(self):
        summary = check_package(dir_getter(self.pkg["fmp4"]), "", source_duration=DURATION,
                                expect_renditions=2)
        self.assertEqual(summary["keys"], dir_keys(self.pkg["fmp4"]))
        for r in summary["renditions"]:
            self.assertGreaterEqual(r["bandwidth"], r["measured_peak"])
            self.assertLessEqual(r["bandwidth"], 1.25 * r["measured_peak"])
            self.assertEqual(r["audio"], "aud")
        # A prefix given with slashes means the same.
        self.assertEqual(check_package(dir_getter(self.work), "/fmp4/")["keys"],
                         {"fmp4/" + k for k in summary["keys"]})

    # --- what it must reject ------------------------------------------------

    def test_missing_segment(self):
        pkg = self.copy_pkg("fmp4", "missing-segment")
        os.unlink(os.path.join(pkg, "360p", "seg_00002.m4s"))
        self.assert_fails(pkg, r"segment '360p/seg_00002\.m4s' does not exist")

    def test_missing_map(self):
        pkg = self.copy_pkg("fmp4", "missing-map")
        os.unlink(os.path.join(pkg, "audio", "init_2.mp4"))
        self.assert_fails(pkg, r"EXT-X-MAP 'audio/init_2\.mp4' does not exist")

    def test_missing_media_playlist(self):
        pkg = self.copy_pkg("ts", "missing-playlist")
        os.unlink(os.path.join(pkg, "audio", "index.m3u8"))
        self.assert_fails(pkg, r"media playlist 'audio/index\.m3u8' does not exist")

    def test_bandwidth_too_low(self):
        pkg = self.copy_pkg("fmp4", "bandwidth-low")
        write_master(pkg, self.info["fmp4"], bandwidth={"720p": lambda peak: int(peak * 0.9)})
        self.assert_fails(pkg, r"master\.m3u8:5: BANDWIDTH=\d+ is below the measured peak")

    def test_bandwidth_too_high(self):
        pkg = self.copy_pkg("ts", "bandwidth-high")
        write_master(pkg, self.info["ts"], bandwidth={"360p": lambda peak: int(peak * 1.3)})
        self.assert_fails(pkg, r"master\.m3u8:7: BANDWIDTH=\d+ is over 1\.25 x the measured peak")

    def test_wrong_resolution(self):
        pkg = self.copy_pkg("fmp4", "resolution")
        write_master(pkg, self.info["fmp4"], resolution={"360p": "640x480"})
        self.assert_fails(pkg, r"RESOLUTION=640x480 but '360p/index\.m3u8' is 640x360")

    def test_wrong_codecs(self):
        pkg = self.copy_pkg("ts", "codecs")
        write_master(pkg, self.info["ts"], codecs={"720p": "avc1.42e01e,mp4a.40.2"})
        self.assert_fails(pkg, r"CODECS=avc1\.42e01e,mp4a\.40\.2 but the media are avc1\.64001f,mp4a\.40\.2")

    def test_missing_endlist(self):
        pkg = self.copy_pkg("fmp4", "endlist")
        edit(os.path.join(pkg, "720p", "index.m3u8"), "#EXT-X-ENDLIST\n", "")
        self.assert_fails(pkg, r"720p/index\.m3u8: EXT-X-ENDLIST appears 0 times")

    def test_targetduration_too_small(self):
        pkg = self.copy_pkg("ts", "target")
        edit(os.path.join(pkg, "360p", "index.m3u8"), "#EXT-X-TARGETDURATION:4", "#EXT-X-TARGETDURATION:3")
        self.assert_fails(pkg, r"EXTINF 4\.000000 rounds to 4 > EXT-X-TARGETDURATION 3")

    def test_unknown_tag(self):
        pkg = self.copy_pkg("fmp4", "tag")
        write_master(pkg, self.info["fmp4"], extra_line="#EXT-X-SESSION-DATA:DATA-ID=\"x\",VALUE=\"y\"")
        self.assert_fails(pkg, r"tag #EXT-X-SESSION-DATA is not allowed in the master")

    def test_wrong_extinf(self):
        pkg = self.copy_pkg("fmp4", "extinf")
        edit(os.path.join(pkg, "720p", "index.m3u8"), "#EXTINF:4.000000,\nseg_00001",
             "#EXTINF:3.500000,\nseg_00001")
        self.assert_fails(pkg, r"EXTINF 3\.500000 but '720p/seg_00001\.m4s' measures (4\.0000|3\.9999)",
                          r"not aligned across renditions")

    def test_misaligned_keyframes(self):
        pkg = self.copy_pkg("fmp4", "misaligned")
        with timed("encode misaligned 360p (-g 97, fmp4)"):
            make_bad_360p(self.src, os.path.join(pkg, "360p"), "fmp4")
        write_master(pkg, self.info["fmp4"])
        self.assert_fails(pkg, r"segment boundaries not aligned across renditions|"
                               r"segments but '720p/index\.m3u8' has 5")

    def test_segment_not_starting_on_keyframe(self):
        pkg = self.copy_pkg("ts", "no-keyframe")
        with timed("encode 360p split_by_time (-g 97, ts)"):
            make_bad_360p(self.src, os.path.join(pkg, "360p"), "ts", split_by_time=True)
        write_master(pkg, self.info["ts"])
        self.assert_fails(pkg, r"video segment '360p/seg_00001\.ts' does not start with a keyframe")

    def test_decode_all_fails_on_truncated_segment(self):
        pkg = self.copy_pkg("fmp4", "truncated")
        p = os.path.join(pkg, "720p", "seg_00002.m4s")
        with open(p, "r+b") as f:
            f.truncate(os.path.getsize(p) // 2)
        with serve(dir_getter(pkg)) as srv:
            with timed("decode_all on a truncated segment"):
                with self.assertRaises(AssertionError) as cm:
                    decode_all(srv.url("master.m3u8"))
        self.assertRegex(str(cm.exception), r"failed on 1 of 3 playlists:\n  \S+/720p/index\.m3u8")
        self.assert_fails(pkg, r"EXTINF 4\.000000 but '720p/seg_00002\.m4s' measures")

    def test_player_fails_on_missing_segment(self):
        ok, why = hlscheck.have_player()
        if not ok:
            self.skipTest(why)
        pkg = self.copy_pkg("fmp4", "player-missing")
        for n in ("720p", "360p"):
            os.unlink(os.path.join(pkg, n, "seg_00002.m4s"))
        with serve(dir_getter(pkg)) as srv:
            with timed("play_in_browser on a package with a missing segment"):
                res = play_in_browser(srv.url("master.m3u8"), timeout=60, check=False)
        self.assertFalse(res["ok"])
        self.assertNotEqual(res["returncode"], 0)
        self.assertTrue(res["http_errors"], res)
        self.assertTrue(res["fatal_errors"] or not res["ended"], res["reason"])


def tearDownModule():
    if TIMINGS:
        print("\ntimings:")
        for label, s in TIMINGS:
            print("  %6.1f s  %s" % (s, label))


if __name__ == "__main__":
    t0 = time.monotonic()
    prog = unittest.main(exit=False, verbosity=2 if "-v" in sys.argv else 1)
    print("total %.1f s" % (time.monotonic() - t0))
    sys.exit(0 if prog.result.wasSuccessful() else 1)
