"""A strict checker for the HLS packages of ladder jobs, and two ways to
play one: ffmpeg decoding every rendition over HTTP, and hls.js in headless
Chromium (test/player/play.js).

    summary = check_package(get, "vod/abc", source_duration=20.0,
                            expect_renditions=["720p", "360p"])
    assert s3_keys(bed, "media", "vod/abc/") == summary["keys"]
    with serve(get) as srv:                      # plain HTTP over get()
        decode_all(srv.url("vod/abc/master.m3u8"))
    play_in_browser(bed.endpoint + "/media/vod/abc/master.m3u8",
                    force_level=1, env=bed.env())

API:
  check_package(get, prefix, master_name="master.m3u8", source_duration=None,
                expect_renditions=None, jobs=2) -> summary dict
      get(key) -> bytes, or None when there is no such object (must be
      thread-safe when jobs > 1).  Keys are prefix + "/" + the relative
      URIs of the playlists.  Raises AssertionError listing every violation
      found (one per line) once it has looked at everything it could.
      expect_renditions: None, an int (how many variants), or a list in
      master order of names ("720p": the URI's folder) or of dicts whose
      items must equal the summary's ({"name": "720p", "height": 720}).
      Summary: master (key), version, segment_type ("fmp4" or "ts"),
      renditions (one per EXT-X-STREAM-INF, master order: name, uri,
      width, height, frame_rate, bandwidth, average_bandwidth, codecs,
      expected_codecs, audio, segments (count), segment_durations,
      duration, target_duration, measured_peak, measured_average, bytes),
      audio (one per EXT-X-MEDIA TYPE=AUDIO with a URI: name, group,
      default, uri, channels (CHANNELS' count, or None), codecs, segments, segment_durations, duration,
      target_duration, peak, average, bytes), keys (set of every key
      referenced: master, media playlists, maps, segments), total_bytes (of
      those), duration (longest rendition).
  decode_all(master_url, timeout=300) -> {url: seconds}
      ffmpeg -v error -i URL -map 0 -f null - for every media playlist the
      master names; AssertionError unless each exits 0 and prints nothing.
  play_in_browser(master_url, force_level=None, timeout=120, env=None,
                  rate=4, check=True) -> dict
      node test/player/play.js; the dict is its JSON line (ok, reason,
      levels, level_switched, frag_loaded, errors, ...).  An .mpd URL is
      played with dash.js instead (representations in place of levels,
      dashjs_version in place of hls_version).  check=True raises
      AssertionError unless ok.  env: added to the environment, e.g.
      bed.env() so that play.js signs its GETs to the S3 bed.
  serve(get) -> context manager yielding srv (srv.base, srv.url(key),
      srv.requests): a plain HTTP server on 127.0.0.1 over get(), for
      ffmpeg (it cannot sign requests to the bed) or a local directory.
  dir_getter(root), dir_keys(root, prefix=""), s3_getter(bed, bucket),
  s3_keys(bed, bucket, prefix): get functions and key listings.
  have_player(url=None) -> (bool, why): node, Chromium and
      test/player/node_modules (plus dash.js when url is an .mpd).

What check_package enforces (RFC 8216 and cap-server's master shape):
  master: starts with #EXTM3U; tags only from MASTER_TAGS; one
    EXT-X-VERSION; every EXT-X-STREAM-INF has BANDWIDTH, RESOLUTION,
    CODECS (+ AUDIO naming a TYPE=AUDIO group when the master has
    EXT-X-MEDIA); no unused audio group; relative URIs inside the prefix.
  media playlists: #EXTM3U, one EXT-X-VERSION (>= 3 with decimal EXTINF,
    >= 6 with EXT-X-MAP), EXT-X-TARGETDURATION >= every EXTINF rounded to
    the nearest integer (RFC 8216 4.3.3.1), EXT-X-MEDIA-SEQUENCE,
    EXT-X-PLAYLIST-TYPE:VOD, EXT-X-ENDLIST last; one EXT-X-MAP before the
    first segment for fMP4 segments, none for MPEG-TS; extension matches
    content (.m4s/.mp4 fMP4, .ts TS); one segment type for the package.
  objects: every referenced key exists; no segment referenced twice.
  timing (ffprobe, once per media playlist on its map followed by all its
    segments, packets assigned to segments by byte position): each EXTINF within
    max(0.1 s, one frame) of the segment's measured duration; with
    source_duration, each rendition's total within its TARGETDURATION of
    it; every video segment starts with a keyframe; video renditions have
    the same segment count, their boundaries (cumulative EXTINF) agree
    within 1 ms, and so do the measured segment starts (relative to
    segment 0) within half a frame.
  master vs media: RESOLUTION = ffprobe's width x height; CODECS = the set
    from the streams (avc1.PPCCLL from the SPS profile_idc, constraint byte
    and level_idc; mp4a.40.2 for AAC-LC, .5 HE-AAC, .29 HE-AACv2) of the
    variant and its audio group; FRAME-RATE (if given) within 0.01;
    an audio rendition's CHANNELS (if given) starts with its channel count;
    BANDWIDTH between the measured peak and 1.25 x it, where the measured
    peak is max(segment bytes * 8 / EXTINF) of the video rendition plus
    that of its audio group's rendition (the largest, when several);
    AVERAGE-BANDWIDTH (if given) within 10 % of the same with
    sum(bytes) * 8 / sum(EXTINF).  Segment sizes exclude the init segment.
"""
import bisect
import concurrent.futures
import contextlib
import http.server
import json
import math
import os
import posixpath
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYER_DIR = os.path.join(ROOT, "test", "player")
PLAY_JS = os.path.join(PLAYER_DIR, "play.js")
CHROMIUM = "/usr/bin/chromium"
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
FFPROBE = shutil.which("ffprobe") or "ffprobe"
NODE = shutil.which("node") or "node"

MASTER_TAGS = {"EXTM3U", "EXT-X-VERSION", "EXT-X-INDEPENDENT-SEGMENTS", "EXT-X-MEDIA",
               "EXT-X-STREAM-INF"}
MEDIA_TAGS = {"EXTM3U", "EXT-X-VERSION", "EXT-X-TARGETDURATION", "EXT-X-MEDIA-SEQUENCE",
              "EXT-X-PLAYLIST-TYPE", "EXT-X-INDEPENDENT-SEGMENTS", "EXT-X-MAP", "EXTINF",
              "EXT-X-ENDLIST"}
STREAM_INF_ATTRS = {"BANDWIDTH", "AVERAGE-BANDWIDTH", "CODECS", "RESOLUTION", "FRAME-RATE",
                    "AUDIO", "CLOSED-CAPTIONS", "HDCP-LEVEL", "VIDEO-RANGE"}
MEDIA_ATTRS = {"TYPE", "URI", "GROUP-ID", "LANGUAGE", "ASSOC-LANGUAGE", "NAME", "DEFAULT",
               "AUTOSELECT", "FORCED", "INSTREAM-ID", "CHARACTERISTICS", "CHANNELS"}

DURATION_TOLERANCE = 0.1      # s, or one frame when that is longer
BOUNDARY_TOLERANCE = 0.001    # s, cumulative EXTINF across video renditions
BANDWIDTH_HEADROOM = 1.25     # BANDWIDTH <= this x the measured peak
AVERAGE_TOLERANCE = 0.10      # AVERAGE-BANDWIDTH within this of the measured average

AUDIO_CODECS = {("aac", "LC"): "mp4a.40.2", ("aac", "HE-AAC"): "mp4a.40.5",
                ("aac", "HE-AACv2"): "mp4a.40.29", ("aac", "Main"): "mp4a.40.1",
                ("mp3", None): "mp4a.40.34", ("ac3", None): "ac-3", ("eac3", None): "ec-3",
                ("opus", None): "opus", ("flac", None): "flac"}


# ---------------------------------------------------------------------------
# Getters

def dir_getter(root):
    """get(key) over a local directory (key relative to root)."""
    root = os.path.realpath(root)

    def get(key):
        path = os.path.realpath(os.path.join(root, key))
        if not path.startswith(root + os.sep) or not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()
    return get


def dir_keys(root, prefix=""):
    """Every file under root as a key (prefix + relative path, '/'-separated)."""
    out = set()
    for d, _, files in os.walk(root):
        for n in files:
            rel = os.path.relpath(os.path.join(d, n), root).replace(os.sep, "/")
            out.add(prefix + rel)
    return out


def s3_getter(bed, bucket):
    """get(key) for an s3bed.S3Bed bucket, through the bed's own SigV4
    client (no boto3 needed).  None on 404."""
    def get(key):
        r = bed.request("GET", bucket, key)
        if r.status == 404:
            return None
        if r.status != 200:
            raise RuntimeError("GET %s/%s: %d %s" % (bucket, key, r.status, r.code))
        return r.body
    return get


def s3_keys(bed, bucket, prefix):
    """The keys under prefix in an s3bed bucket (awscli paginates)."""
    return {o["Key"] for o in bed.list_objects(bucket, prefix=prefix)}


# ---------------------------------------------------------------------------
# Playlist parsing

class _Problems:
    def __init__(self):
        self.items = []

    def add(self, where, msg):
        self.items.append("%s: %s" % (where, msg))

    def need(self, cond, where, msg):
        if not cond:
            self.add(where, msg)
        return cond

    def raise_if_any(self):
        if self.items:
            raise AssertionError("HLS package check failed (%d problem%s):\n  %s" % (
                len(self.items), "" if len(self.items) == 1 else "s", "\n  ".join(self.items)))


_ATTR_RE = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",\r\n]*)')


def parse_attributes(text):
    """RFC 8216 attribute list -> {name: (value, quoted)}; ValueError on a
    malformed list or a repeated name."""
    out, pos = {}, 0
    while pos < len(text):
        m = _ATTR_RE.match(text, pos)
        if not m or not m.group(2):
            raise ValueError("malformed attribute list at %r" % text[pos:pos + 30])
        name, val = m.groups()
        if name in out:
            raise ValueError("attribute %s repeated" % name)
        quoted = val.startswith('"')
        out[name] = (val[1:-1] if quoted else val, quoted)
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ValueError("expected ',' at %r" % text[pos:pos + 30])
            pos += 1
            if pos == len(text):
                raise ValueError("trailing ','")
    return out


def _lines(data, where, probs):
    """Decoded lines with their numbers; None when unusable."""
    if data.startswith(b"\xef\xbb\xbf"):
        probs.add(where, "starts with a byte order mark")
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        probs.add(where, "not UTF-8 (%s)" % e)
        return None
    lines = [(i + 1, ln[:-1] if ln.endswith("\r") else ln) for i, ln in enumerate(text.split("\n"))]
    if not lines or lines[0][1] != "#EXTM3U":
        probs.add(where, "does not start with #EXTM3U (first line %r)" % (lines[0][1][:40] if lines else ""))
        return None
    return lines


def _tag(line):
    name, sep, value = line[1:].partition(":")
    return name, (value if sep else None)


def _is_decimal_int(s):
    return bool(re.fullmatch(r"[0-9]{1,20}", s or ""))


def _resolve(base_key, uri, prefix, where, probs):
    """The key a relative URI names, or None (with a problem)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri) or uri.startswith("/"):
        probs.add(where, "URI %r is not relative" % uri)
        return None
    if "?" in uri or "#" in uri:
        probs.add(where, "URI %r has a query or fragment" % uri)
        return None
    key = posixpath.normpath(posixpath.join(posixpath.dirname(base_key), urllib.parse.unquote(uri)))
    if key == ".." or key.startswith("../") or (prefix and not key.startswith(prefix + "/")):
        probs.add(where, "URI %r leaves the prefix %r (-> %r)" % (uri, prefix, key))
        return None
    return key


def parse_master(data, key, prefix, probs):
    """-> dict(version, independent, media=[...], variants=[...]) or None."""
    where = key
    lines = _lines(data, where, probs)
    if lines is None:
        return None
    out = {"version": None, "independent": False, "media": [], "variants": []}
    versions = 0
    pending = None          # the STREAM-INF waiting for its URI line
    for no, line in lines[1:]:
        at = "%s:%d" % (where, no)
        if not line.strip():
            continue
        if line.startswith("#EXT"):
            name, value = _tag(line)
            if name not in MASTER_TAGS:
                probs.add(at, "tag #%s is not allowed in the master (known: %s)" % (
                    name, ", ".join(sorted(MASTER_TAGS - {"EXTM3U"}))))
                continue
            if pending is not None:
                probs.add(at, "#%s between EXT-X-STREAM-INF and its URI" % name)
            if name == "EXTM3U":
                probs.add(at, "#EXTM3U repeated")
            elif name == "EXT-X-VERSION":
                versions += 1
                if probs.need(_is_decimal_int(value), at, "EXT-X-VERSION %r is not an integer" % value):
                    out["version"] = int(value)
            elif name == "EXT-X-INDEPENDENT-SEGMENTS":
                probs.need(value is None, at, "EXT-X-INDEPENDENT-SEGMENTS takes no value")
                out["independent"] = True
            elif name in ("EXT-X-MEDIA", "EXT-X-STREAM-INF"):
                try:
                    attrs = parse_attributes(value or "")
                except ValueError as e:
                    probs.add(at, "#%s: %s" % (name, e))
                    continue
                allowed = MEDIA_ATTRS if name == "EXT-X-MEDIA" else STREAM_INF_ATTRS
                for a in attrs:
                    probs.need(a in allowed, at, "#%s has unknown attribute %s" % (name, a))
                if name == "EXT-X-MEDIA":
                    out["media"].append(_media_entry(attrs, at, key, prefix, probs))
                else:
                    pending = {"attrs": attrs, "line": no}
        elif line.startswith("#"):
            continue        # a comment
        else:
            if pending is None:
                probs.add(at, "URI %r not preceded by EXT-X-STREAM-INF" % line)
                continue
            v = _variant_entry(pending["attrs"], "%s:%d" % (where, pending["line"]), probs)
            v["uri"] = line
            v["key"] = _resolve(key, line, prefix, at, probs)
            out["variants"].append(v)
            pending = None
    if pending is not None:
        probs.add(where, "EXT-X-STREAM-INF at line %d has no URI" % pending["line"])
    probs.need(versions == 1, where, "EXT-X-VERSION appears %d times (want 1)" % versions)
    probs.need(out["variants"], where, "no EXT-X-STREAM-INF")
    return out


def _attr(attrs, name, at, probs, quoted, required=True):
    if name not in attrs:
        if required:
            probs.add(at, "missing %s" % name)
        return None
    val, q = attrs[name]
    if q != quoted:
        probs.add(at, "%s must be %s" % (name, "a quoted string" if quoted else "unquoted"))
    return val


def _media_entry(attrs, at, key, prefix, probs):
    e = {"at": at}
    e["type"] = _attr(attrs, "TYPE", at, probs, False)
    e["group"] = _attr(attrs, "GROUP-ID", at, probs, True)
    e["name"] = _attr(attrs, "NAME", at, probs, True)
    e["uri"] = _attr(attrs, "URI", at, probs, True, required=False)
    e["default"] = _attr(attrs, "DEFAULT", at, probs, False, required=False) or "NO"
    e["autoselect"] = _attr(attrs, "AUTOSELECT", at, probs, False, required=False) or "NO"
    ch = _attr(attrs, "CHANNELS", at, probs, True, required=False)
    e["channels"] = None
    if ch is not None and probs.need(re.match(r"^[1-9]\d*(/|$)", ch), at,
                                     "CHANNELS=%r does not start with a channel count" % ch):
        e["channels"] = int(re.match(r"^\d+", ch).group(0))
    probs.need(e["type"] in ("AUDIO", "VIDEO", "SUBTITLES", "CLOSED-CAPTIONS"), at,
               "EXT-X-MEDIA TYPE %r unknown" % e["type"])
    probs.need(e["type"] == "AUDIO", at, "EXT-X-MEDIA TYPE=%s: only AUDIO renditions are expected" % e["type"])
    for a in ("default", "autoselect"):
        probs.need(e[a] in ("YES", "NO"), at, "%s=%r is not YES or NO" % (a.upper(), e[a]))
    if e["default"] == "YES" and "AUTOSELECT" in attrs:
        probs.need(e["autoselect"] == "YES", at, "DEFAULT=YES with AUTOSELECT=NO (RFC 8216 4.3.4.1)")
    e["key"] = _resolve(key, e["uri"], prefix, at, probs) if e["uri"] is not None else None
    return e


def _variant_entry(attrs, at, probs):
    v = {"at": at, "bandwidth": None, "average_bandwidth": None, "width": None, "height": None,
         "codecs": None, "audio": None, "frame_rate": None}
    bw = _attr(attrs, "BANDWIDTH", at, probs, False)
    if bw is not None and probs.need(_is_decimal_int(bw), at, "BANDWIDTH %r is not an integer" % bw):
        v["bandwidth"] = int(bw)
    abw = _attr(attrs, "AVERAGE-BANDWIDTH", at, probs, False, required=False)
    if abw is not None and probs.need(_is_decimal_int(abw), at, "AVERAGE-BANDWIDTH %r is not an integer" % abw):
        v["average_bandwidth"] = int(abw)
    res = _attr(attrs, "RESOLUTION", at, probs, False)
    if res is not None:
        m = re.fullmatch(r"([0-9]+)x([0-9]+)", res)
        if probs.need(m, at, "RESOLUTION %r is not WxH" % res):
            v["width"], v["height"] = int(m.group(1)), int(m.group(2))
    codecs = _attr(attrs, "CODECS", at, probs, True)
    if codecs is not None:
        v["codecs"] = [c.strip() for c in codecs.split(",")]
        probs.need(all(v["codecs"]), at, "CODECS %r has an empty entry" % codecs)
    v["audio"] = _attr(attrs, "AUDIO", at, probs, True, required=False)
    fr = _attr(attrs, "FRAME-RATE", at, probs, False, required=False)
    if fr is not None:
        try:
            v["frame_rate"] = float(fr)
        except ValueError:
            probs.add(at, "FRAME-RATE %r is not a number" % fr)
    return v


def parse_media(data, key, prefix, probs):
    """-> dict(version, target, sequence, type, map_key, segments=[(dur, key)],
    endlist) or None."""
    where = key
    lines = _lines(data, where, probs)
    if lines is None:
        return None
    out = {"version": None, "target": None, "sequence": None, "type": None, "map_key": None,
           "segments": [], "endlist": False, "decimal_extinf": False, "independent": False}
    counts = {}
    pending = None           # EXTINF duration waiting for its URI
    last_nonblank = None
    for no, line in lines[1:]:
        at = "%s:%d" % (where, no)
        if not line.strip():
            continue
        last_nonblank = (no, line)
        if out["endlist"]:
            probs.add(at, "content after EXT-X-ENDLIST")
        if line.startswith("#EXT"):
            name, value = _tag(line)
            if name not in MEDIA_TAGS:
                probs.add(at, "tag #%s is not allowed in a media playlist (known: %s)" % (
                    name, ", ".join(sorted(MEDIA_TAGS - {"EXTM3U"}))))
                continue
            counts[name] = counts.get(name, 0) + 1
            if pending is not None and name != "EXTINF":
                probs.add(at, "#%s between EXTINF and its URI" % name)
            if name == "EXTM3U":
                probs.add(at, "#EXTM3U repeated")
            elif name == "EXT-X-VERSION":
                if probs.need(_is_decimal_int(value), at, "EXT-X-VERSION %r is not an integer" % value):
                    out["version"] = int(value)
            elif name == "EXT-X-TARGETDURATION":
                if probs.need(_is_decimal_int(value), at,
                              "EXT-X-TARGETDURATION %r is not a decimal integer" % value):
                    out["target"] = int(value)
            elif name == "EXT-X-MEDIA-SEQUENCE":
                if probs.need(_is_decimal_int(value), at, "EXT-X-MEDIA-SEQUENCE %r is not an integer" % value):
                    out["sequence"] = int(value)
                probs.need(not out["segments"], at, "EXT-X-MEDIA-SEQUENCE after the first segment")
            elif name == "EXT-X-PLAYLIST-TYPE":
                out["type"] = value
            elif name == "EXT-X-INDEPENDENT-SEGMENTS":
                out["independent"] = True
            elif name == "EXT-X-MAP":
                probs.need(not out["segments"], at, "EXT-X-MAP after the first segment")
                try:
                    attrs = parse_attributes(value or "")
                except ValueError as e:
                    probs.add(at, "EXT-X-MAP: %s" % e)
                    continue
                for a in attrs:
                    probs.need(a == "URI", at, "EXT-X-MAP attribute %s not supported here" % a)
                uri = _attr(attrs, "URI", at, probs, True)
                if uri is not None:
                    out["map_key"] = _resolve(key, uri, prefix, at, probs)
            elif name == "EXTINF":
                if pending is not None:
                    probs.add(at, "EXTINF without a URI before it")
                dur_text, _, _title = (value or "").partition(",")
                if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", dur_text):
                    probs.add(at, "EXTINF duration %r is not a decimal number" % dur_text)
                    pending = (0.0, at)
                    continue
                if "." in dur_text:
                    out["decimal_extinf"] = True
                d = float(dur_text)
                probs.need(d > 0, at, "EXTINF duration is 0")
                pending = (d, at)
            elif name == "EXT-X-ENDLIST":
                out["endlist"] = True
        elif line.startswith("#"):
            continue
        else:
            if pending is None:
                probs.add(at, "URI %r not preceded by EXTINF" % line)
                continue
            seg_key = _resolve(key, line, prefix, at, probs)
            out["segments"].append({"duration": pending[0], "key": seg_key, "uri": line, "at": pending[1]})
            pending = None
    if pending is not None:
        probs.add(pending[1], "EXTINF with no URI")
    for name in ("EXT-X-VERSION", "EXT-X-TARGETDURATION", "EXT-X-MEDIA-SEQUENCE",
                 "EXT-X-PLAYLIST-TYPE", "EXT-X-ENDLIST"):
        probs.need(counts.get(name, 0) == 1, where,
                   "%s appears %d times (want 1)" % (name, counts.get(name, 0)))
    probs.need(counts.get("EXT-X-MAP", 0) <= 1, where, "more than one EXT-X-MAP")
    if out["type"] is not None:
        probs.need(out["type"] == "VOD", where, "EXT-X-PLAYLIST-TYPE is %r, not VOD" % out["type"])
    if out["endlist"] and last_nonblank is not None:
        probs.need(last_nonblank[1] == "#EXT-X-ENDLIST", where, "EXT-X-ENDLIST is not the last line")
    probs.need(out["segments"], where, "no segments")
    if out["version"] is not None:
        if out["decimal_extinf"]:
            probs.need(out["version"] >= 3, where,
                       "decimal EXTINF durations need EXT-X-VERSION >= 3 (have %d)" % out["version"])
        if out["map_key"] is not None:
            probs.need(out["version"] >= 6, where,
                       "EXT-X-MAP needs EXT-X-VERSION >= 6 (have %d)" % out["version"])
    if out["target"] is not None:
        for s in out["segments"]:
            # RFC 8216 4.3.3.1: each EXTINF rounded to the nearest integer
            # must not exceed the target duration.
            rounded = int(math.floor(s["duration"] + 0.5))
            probs.need(rounded <= out["target"], s["at"],
                       "EXTINF %.6f rounds to %d > EXT-X-TARGETDURATION %d"
                       % (s["duration"], rounded, out["target"]))
    return out


# ---------------------------------------------------------------------------
# Media measurement

def _sniff(data):
    """'ts', 'fmp4' (a media segment), 'init' (ftyp+moov) or None."""
    if len(data) >= 1 and data[0] == 0x47 and (len(data) < 189 or data[188] == 0x47):
        return "ts"
    if len(data) >= 8:
        box = data[4:8]
        if box in (b"styp", b"moof", b"sidx", b"prft", b"emsg"):
            return "fmp4"
        if box == b"ftyp":
            return "init" if b"moov" in data[:65536] else "mp4"
    return None


def _clip(err, lines=4):
    """The first lines of a tool's stderr, on one line."""
    ls = [ln.strip() for ln in err.splitlines() if ln.strip()]
    more = " (+%d more lines)" % (len(ls) - lines) if len(ls) > lines else ""
    return " | ".join(ls[:lines]) + more


def _rate(s):
    try:
        n, d = s.split("/")
        return float(n) / float(d) if float(d) else None
    except (ValueError, AttributeError):
        return None


def _measure(path, ranges):
    """Probe path (a map followed by the playlist's segments, or the
    segments alone) once; ranges: the segments' [start, end) byte ranges in
    it.  Packets are assigned to segments by their byte position.
    -> (returncode, stderr, streams {index: facts}, segments [{index:
    {start, span, first_key, packets}}])."""
    r = subprocess.run([FFPROBE, "-v", "error", "-show_entries",
                        "stream=index,codec_type,codec_name,profile,level,width,height,"
                        "avg_frame_rate,r_frame_rate,sample_rate,channels,sample_aspect_ratio:"
                        "packet=stream_index,pts_time,duration_time,flags,pos",
                        "-of", "json", path],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    try:
        doc = json.loads(r.stdout) if r.stdout.strip() else {}
    except ValueError:
        doc = {}
    streams = {}
    for st in doc.get("streams", []):
        streams[st["index"]] = {
            "type": st.get("codec_type"), "codec": st.get("codec_name"), "profile": st.get("profile"),
            "level": st.get("level"), "width": st.get("width"), "height": st.get("height"),
            "fps": _rate(st.get("avg_frame_rate")) or _rate(st.get("r_frame_rate")),
            "sample_rate": st.get("sample_rate"), "frame": None,
            "r_frame_rate": st.get("r_frame_rate"), "channels": st.get("channels"),
            "sar": st.get("sample_aspect_ratio")}
    starts = [a for a, _ in ranges]
    segs = [{} for _ in ranges]
    durs = {i: [] for i in streams}
    raw = {}
    last_pos = {}
    for p in doc.get("packets", []):
        idx = p.get("stream_index")
        if idx not in streams:
            continue
        try:
            pts = float(p["pts_time"])
        except (KeyError, ValueError):
            continue
        # A parser splitting one MPEG-TS PES into frames (AAC) gives the
        # position to the first frame only; the rest come from the same PES.
        try:
            pos = last_pos[idx] = int(p["pos"])
        except (KeyError, ValueError):
            pos = last_pos.get(idx)
            if pos is None:
                continue
        try:
            dur = float(p["duration_time"])
        except (KeyError, ValueError):
            dur = None
        if dur:
            durs[idx].append(dur)
        k = bisect.bisect_right(starts, pos) - 1
        if k < 0 or pos >= ranges[k][1]:
            continue        # in the map, or outside every segment
        raw.setdefault((k, idx), []).append((pts, dur, "K" in (p.get("flags") or "")))
    for idx, st in streams.items():
        if durs[idx]:
            st["frame"] = statistics.median(durs[idx])
        elif st["type"] == "video" and st["fps"]:
            st["frame"] = 1.0 / st["fps"]
    for (k, idx), pk in raw.items():
        nominal = streams[idx]["frame"] or 0
        lo = min(t for t, _, _ in pk)
        hi = max(t + (d or nominal) for t, d, _ in pk)
        segs[k][idx] = {"start": lo, "span": hi - lo, "first_key": pk[0][2], "packets": len(pk)}
    return r.returncode, r.stderr.strip(), streams, segs


def _h264_codec_string(path):
    """avc1.PPCCLL from the first SPS of the first video frame, or None."""
    r = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", path, "-map", "0:v:0", "-c", "copy",
                        "-frames:v", "1", "-f", "h264", "-"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    data = r.stdout
    for m in re.finditer(b"\x00\x00\x01", data):
        i = m.end()
        if i < len(data) and data[i] & 0x1F == 7:
            rbsp = data[i + 1:i + 12].replace(b"\x00\x00\x03", b"\x00\x00")
            if len(rbsp) >= 3:
                return "avc1.%02x%02x%02x" % (rbsp[0], rbsp[1], rbsp[2])
    return None


def _stream_codec(st, path):
    if st["type"] == "video":
        if st["codec"] == "h264":
            return _h264_codec_string(path)
        return None
    if st["type"] == "audio":
        return AUDIO_CODECS.get((st["codec"], st["profile"])) or AUDIO_CODECS.get((st["codec"], None))
    return None


# ---------------------------------------------------------------------------
# The package check

def check_package(get, prefix, master_name="master.m3u8", source_duration=None,
                  expect_renditions=None, jobs=2):
    """Check the HLS package under prefix (see the module docstring).
    Returns the summary; raises AssertionError listing the violations."""
    prefix = prefix.strip("/")
    master_key = (prefix + "/" if prefix else "") + master_name
    probs = _Problems()
    data = get(master_key)
    if data is None:
        raise AssertionError("HLS package check failed: master %r does not exist" % master_key)
    master = parse_master(data, master_key, prefix, probs)
    if master is None:
        probs.raise_if_any()
    keys = {master_key}
    total_bytes = len(data)

    # Audio groups.
    groups = {}
    for m in master["media"]:
        if m["type"] != "AUDIO" or m["group"] is None:
            continue
        g = groups.setdefault(m["group"], [])
        probs.need(all(x["name"] != m["name"] for x in g), m["at"],
                   "NAME %r repeated in group %r" % (m["name"], m["group"]))
        g.append(m)
    for gid, g in groups.items():
        probs.need(sum(1 for x in g if x["default"] == "YES") <= 1, master_key,
                   "audio group %r has more than one DEFAULT=YES" % gid)
    used = set()
    for v in master["variants"]:
        if groups:
            if probs.need(v["audio"] is not None, v["at"],
                          "EXT-X-STREAM-INF has no AUDIO attribute but the master has EXT-X-MEDIA audio"):
                probs.need(v["audio"] in groups, v["at"],
                           "AUDIO=%r names no EXT-X-MEDIA GROUP-ID (have %s)" % (v["audio"], sorted(groups)))
                used.add(v["audio"])
        elif v["audio"] is not None:
            probs.add(v["at"], "AUDIO=%r but the master has no EXT-X-MEDIA" % v["audio"])
    for gid in groups:
        probs.need(gid in used, master_key, "audio group %r is used by no EXT-X-STREAM-INF" % gid)

    # Media playlists: variants first, then the audio renditions with a URI.
    playlists = []       # (kind, entry, key)
    seen_pl = set()
    for v in master["variants"]:
        if v["key"] is not None:
            playlists.append(("video", v, v["key"]))
    for m in master["media"]:
        if m["key"] is not None:
            playlists.append(("audio", m, m["key"]))
    parsed = {}
    for kind, entry, key in playlists:
        if key in seen_pl:
            probs.add(entry["at"], "media playlist %r referenced twice" % key)
            continue
        seen_pl.add(key)
        pdata = get(key)
        if pdata is None:
            probs.add(entry["at"], "media playlist %r does not exist" % key)
            continue
        keys.add(key)
        total_bytes += len(pdata)
        pl = parse_media(pdata, key, prefix, probs)
        if pl is not None:
            parsed[key] = pl

    # Objects: maps and segments, fetched and measured.
    seg_owner = {}
    work_keys = set()
    for key, pl in parsed.items():
        for i, s in enumerate(pl["segments"]):
            if s["key"] is None:
                continue
            if s["key"] in seg_owner:
                probs.add(s["at"], "segment %r also referenced by %s" % (s["key"], seg_owner[s["key"]]))
                continue
            seg_owner[s["key"]] = key
            work_keys.add(s["key"])
    inits = {}
    for key, pl in parsed.items():
        mk = pl["map_key"]
        if mk is None or mk in inits:
            continue
        idata = get(mk)
        if idata is None:
            probs.add(key, "EXT-X-MAP %r does not exist" % mk)
            inits[mk] = None
            continue
        keys.add(mk)
        total_bytes += len(idata)
        probs.need(_sniff(idata) == "init", mk, "EXT-X-MAP object is not an fMP4 init segment (ftyp + moov)")
        inits[mk] = idata

    tmp = tempfile.mkdtemp(prefix="hlscheck-")
    seg_types = set()
    info = {}            # playlist key -> measured facts
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
            def fetch(s):
                return s, (get(s["key"]) if s["key"] is not None else None)

            # Fetch every segment (in parallel), check its kind, and lay each
            # playlist out as one file: its map, then its segments in order.
            files = {}
            for n, (key, pl) in enumerate(parsed.items()):
                facts = {"sizes": [], "durations": [s["duration"] for s in pl["segments"]],
                         "starts": [], "codecs": set(), "missing": 0, "kind": None, "main": None,
                         "streams": None}
                info[key] = facts
                path = os.path.join(tmp, "%d.%s" % (n, "mp4" if pl["map_key"] else "ts"))
                ranges, usable = [], []
                # Without its map an fMP4 playlist cannot be measured (the
                # missing map is reported); its segments are still fetched.
                measurable = not pl["map_key"] or inits.get(pl["map_key"]) is not None
                with open(path, "wb") as f:
                    if pl["map_key"] and inits.get(pl["map_key"]):
                        f.write(inits[pl["map_key"]])
                    for s, sdata in ex.map(fetch, [s for s in pl["segments"] if s["key"] in work_keys]):
                        if sdata is None:
                            probs.add(s["at"], "segment %r does not exist" % s["key"])
                            facts["missing"] += 1
                            continue
                        keys.add(s["key"])
                        total_bytes += len(sdata)
                        facts["sizes"].append(len(sdata))
                        kind = _sniff(sdata)
                        seg_types.add(kind)
                        ext = posixpath.splitext(s["key"])[1].lower()
                        if kind == "ts":
                            probs.need(ext == ".ts", s["at"], "MPEG-TS segment %r has extension %r" % (s["key"], ext))
                            probs.need(pl["map_key"] is None, s["at"],
                                       "MPEG-TS segment %r in a playlist with EXT-X-MAP" % s["key"])
                        elif kind == "fmp4":
                            probs.need(ext in (".m4s", ".mp4"), s["at"],
                                       "fMP4 segment %r has extension %r" % (s["key"], ext))
                            probs.need(pl["map_key"] is not None, s["at"],
                                       "fMP4 segment %r but the playlist has no EXT-X-MAP" % s["key"])
                        else:
                            probs.add(s["at"], "segment %r is neither MPEG-TS nor an fMP4 media segment"
                                      % s["key"])
                            continue
                        if measurable:
                            start = f.tell()
                            f.write(sdata)
                            ranges.append((start, f.tell()))
                            usable.append(s)
                files[key] = (path, ranges, usable)

            def probe(key):
                path, ranges, usable = files[key]
                if not usable:
                    return key, None, None
                meas = _measure(path, ranges)
                codecs = {idx: _stream_codec(st, path) for idx, st in meas[2].items()}
                return key, meas, codecs

            for key, meas, codecs in ex.map(probe, list(files)):
                if meas is None:
                    continue
                facts, (path, ranges, usable) = info[key], files[key]
                rc, err, streams, segs = meas
                if not probs.need(rc == 0 and streams, key, "ffprobe failed: %s" % _clip(err)):
                    continue
                probs.need(not err, key, "ffprobe complains: %s" % _clip(err))
                video = [i for i, st in streams.items() if st["type"] == "video"]
                audio = [i for i, st in streams.items() if st["type"] == "audio"]
                if not (video or audio):
                    probs.add(key, "no audio or video stream")
                    continue
                main_idx = (video or audio)[0]
                facts["main"] = streams[main_idx]
                facts["kind"] = "video" if video else "audio"
                facts["streams"] = sorted((st["type"], st["codec"]) for st in streams.values())
                for idx, c in codecs.items():
                    st = streams[idx]
                    if st["type"] not in ("video", "audio"):
                        continue
                    if probs.need(c is not None, key, "cannot derive a CODECS entry for %s %s (profile %s)"
                                  % (st["type"], st["codec"], st["profile"])):
                        facts["codecs"].add(c.lower())
                tol = max(DURATION_TOLERANCE, facts["main"]["frame"] or 0)
                for s, seg in zip(usable, segs):
                    m = seg.get(main_idx)
                    if not probs.need(m is not None, s["at"], "no %s packets in %r" % (facts["kind"], s["key"])):
                        facts["starts"].append(None)
                        continue
                    probs.need(abs(m["span"] - s["duration"]) <= tol, s["at"],
                               "EXTINF %.6f but %r measures %.6f s (tolerance %.3f)"
                               % (s["duration"], s["key"], m["span"], tol))
                    facts["starts"].append(m["start"])
                    for idx in video:
                        v = seg.get(idx)
                        probs.need(v is not None and v["first_key"], s["at"],
                                   "video segment %r does not start with a keyframe" % s["key"])
                    for idx in video + audio:
                        probs.need(idx in seg, s["at"], "segment %r has no packets of stream %d (%s)"
                                   % (s["key"], idx, streams[idx]["type"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    probs.need(len(seg_types) <= 1, master_key, "mixed segment types %s" % sorted(seg_types))

    # Per playlist totals.
    def rates(key):
        f = info.get(key)
        if not f or f["missing"] or len(f["sizes"]) != len(f["durations"]) or not f["sizes"]:
            return None, None
        peak = max(sz * 8 / d for sz, d in zip(f["sizes"], f["durations"]) if d > 0)
        avg = sum(f["sizes"]) * 8 / sum(f["durations"])
        return peak, avg

    for key, pl in parsed.items():
        total = sum(s["duration"] for s in pl["segments"])
        if source_duration is not None and pl["target"] is not None:
            probs.need(abs(total - source_duration) <= pl["target"], key,
                       "total duration %.3f s is not within %d s (TARGETDURATION) of the source's %.3f s"
                       % (total, pl["target"], source_duration))

    audio_out = []
    group_rates = {}
    group_codecs = {}
    unmeasured_groups = set()
    for m in master["media"]:
        if m["type"] != "AUDIO":
            continue
        pl = parsed.get(m["key"]) if m["key"] else None
        f = info.get(m["key"]) if m["key"] else None
        peak, avg = rates(m["key"]) if m["key"] else (None, None)
        if f is not None and f.get("kind") == "video":
            probs.add(m["at"], "audio rendition %r has video" % m["key"])
        if m.get("channels") is not None and f is not None and f.get("main"):
            probs.need(m["channels"] == f["main"].get("channels"), m["at"],
                       "CHANNELS=\"%d\" but %r has %s channels" % (m["channels"], m["key"],
                                                                  f["main"].get("channels")))
        g = group_rates.setdefault(m["group"], [None, None])
        if peak is not None:
            g[0] = max(g[0] or 0, peak)
            g[1] = max(g[1] or 0, avg)
        if f is not None and f["streams"] is not None:
            group_codecs.setdefault(m["group"], set()).update(f["codecs"])
        else:
            unmeasured_groups.add(m["group"])
        audio_out.append({
            "name": m["name"], "group": m["group"], "default": m["default"] == "YES", "uri": m["key"],
            "channels": m.get("channels"),
            "codecs": sorted(f["codecs"]) if f else [],
            "segments": len(pl["segments"]) if pl else 0,
            "segment_durations": [s["duration"] for s in pl["segments"]] if pl else [],
            "duration": sum(s["duration"] for s in pl["segments"]) if pl else None,
            "target_duration": pl["target"] if pl else None,
            "peak": peak, "average": avg, "bytes": sum(f["sizes"]) if f else 0})

    renditions = []
    video_keys = []
    for v in master["variants"]:
        key = v["key"]
        pl = parsed.get(key) if key else None
        f = info.get(key) if key else None
        rel = (key[len(prefix) + 1:] if prefix else key) if key else v["uri"]
        name = posixpath.basename(posixpath.dirname(rel)) if "/" in rel \
            else posixpath.splitext(posixpath.basename(rel))[0]
        r = {"name": name, "uri": key, "width": v["width"], "height": v["height"],
             "frame_rate": v["frame_rate"], "bandwidth": v["bandwidth"],
             "average_bandwidth": v["average_bandwidth"], "codecs": v["codecs"], "audio": v["audio"],
             "expected_codecs": None, "segments": len(pl["segments"]) if pl else 0,
             "segment_durations": [s["duration"] for s in pl["segments"]] if pl else [],
             "duration": sum(s["duration"] for s in pl["segments"]) if pl else None,
             "target_duration": pl["target"] if pl else None,
             "measured_peak": None, "measured_average": None, "bytes": sum(f["sizes"]) if f else 0}
        renditions.append(r)
        if not f or f.get("streams") is None:
            continue
        main = f["main"]
        if f["kind"] == "video":
            video_keys.append(key)
            if v["width"] is not None:
                probs.need((v["width"], v["height"]) == (main["width"], main["height"]), v["at"],
                           "RESOLUTION=%dx%d but %r is %sx%s" % (v["width"], v["height"], key,
                                                                 main["width"], main["height"]))
            if v["frame_rate"] is not None and main["fps"]:
                probs.need(abs(v["frame_rate"] - main["fps"]) <= 0.01, v["at"],
                           "FRAME-RATE=%s but %r runs at %.3f fps" % (v["frame_rate"], key, main["fps"]))
        else:
            probs.need(v["width"] is None, v["at"], "RESOLUTION on a variant without video")
        expected = set(f["codecs"])
        if v["audio"] in group_codecs:
            expected |= group_codecs[v["audio"]]
        r["expected_codecs"] = sorted(expected)
        if v["codecs"] is not None and v["audio"] not in unmeasured_groups:
            have = {c.lower() for c in v["codecs"]}
            probs.need(have == expected and len(have) == len(v["codecs"]), v["at"],
                       "CODECS=%s but the media are %s" % (",".join(v["codecs"]), ",".join(sorted(expected))))
        peak, avg = rates(key)
        if peak is None:
            continue
        if v["audio"] in group_rates:
            gp, ga = group_rates[v["audio"]]
            if gp is None:
                continue        # audio rendition unmeasurable: reported above
            peak += gp
            avg += ga
        r["measured_peak"], r["measured_average"] = peak, avg
        if v["bandwidth"] is not None:
            probs.need(v["bandwidth"] >= math.floor(peak), v["at"],
                       "BANDWIDTH=%d is below the measured peak %.0f b/s (video + audio)" % (v["bandwidth"], peak))
            probs.need(v["bandwidth"] <= BANDWIDTH_HEADROOM * peak, v["at"],
                       "BANDWIDTH=%d is over %.2f x the measured peak %.0f b/s"
                       % (v["bandwidth"], BANDWIDTH_HEADROOM, peak))
        if v["average_bandwidth"] is not None:
            probs.need(abs(v["average_bandwidth"] - avg) <= AVERAGE_TOLERANCE * avg, v["at"],
                       "AVERAGE-BANDWIDTH=%d is not within %d%% of the measured average %.0f b/s"
                       % (v["average_bandwidth"], AVERAGE_TOLERANCE * 100, avg))

    # Keyframe alignment across video renditions.
    if len(video_keys) > 1:
        ref = video_keys[0]
        ref_d = info[ref]["durations"]
        for key in video_keys[1:]:
            d = info[key]["durations"]
            if not probs.need(len(d) == len(ref_d), key,
                              "%d segments but %r has %d: keyframes/segments not aligned across renditions"
                              % (len(d), ref, len(ref_d))):
                continue
            ca = cb = 0.0
            for i, (a, b) in enumerate(zip(ref_d, d)):
                ca += a
                cb += b
                if abs(ca - cb) > BOUNDARY_TOLERANCE:
                    probs.add(key, "segment %d ends at %.6f s but in %r at %.6f s: segment boundaries "
                                   "not aligned across renditions" % (i, cb, ref, ca))
                    break
            sa, sb = info[ref]["starts"], info[key]["starts"]
            if len(sa) == len(sb) == len(d) and sa and None not in sa and None not in sb:
                half = max(info[ref]["main"]["frame"] or 0, info[key]["main"]["frame"] or 0) / 2
                for i in range(1, len(sa)):
                    ra, rb = sa[i] - sa[0], sb[i] - sb[0]
                    if abs(ra - rb) > max(half, BOUNDARY_TOLERANCE):
                        probs.add(key, "segment %d starts %.6f s after segment 0 but in %r %.6f s: "
                                       "keyframes not aligned across renditions" % (i, rb, ref, ra))
                        break

    if expect_renditions is not None:
        if isinstance(expect_renditions, int):
            probs.need(len(renditions) == expect_renditions, master_key,
                       "%d renditions, expected %d" % (len(renditions), expect_renditions))
        else:
            exp = list(expect_renditions)
            if probs.need(len(renditions) == len(exp), master_key,
                          "renditions %s, expected %s" % ([r["name"] for r in renditions], exp)):
                for r, e in zip(renditions, exp):
                    e = {"name": e} if isinstance(e, str) else e
                    for k, want in e.items():
                        probs.need(r.get(k) == want, master_key,
                                   "rendition %r: %s is %r, expected %r" % (r["name"], k, r.get(k), want))

    probs.raise_if_any()
    return {"master": master_key, "version": master["version"],
            "segment_type": next(iter(seg_types)) if seg_types else None,
            "renditions": renditions, "audio": audio_out, "keys": keys, "total_bytes": total_bytes,
            "duration": max([r["duration"] or 0 for r in renditions] + [a["duration"] or 0 for a in audio_out])}


# ---------------------------------------------------------------------------
# Playing it

class _Served:
    def __init__(self, base):
        self.base = base
        self.requests = []

    def url(self, key):
        return self.base + "/" + urllib.parse.quote(key)

    def __str__(self):
        return self.base


_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".m4s": "video/iso.segment", ".mp4": "video/mp4",
          ".ts": "video/mp2t", ".aac": "audio/aac"}


@contextlib.contextmanager
def serve(get):
    """A plain HTTP server on 127.0.0.1 (ephemeral port) answering GET /KEY
    with get(KEY) (404 for None).  Yields an object with .base,
    .url(key) and .requests (the keys asked for)."""
    served = _Served(None)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _answer(self, body_too):
            key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path.lstrip("/"))
            served.requests.append(key)
            try:
                data = get(key)
            except Exception as e:  # noqa: BLE001 - the client sees a 502
                data, err = None, str(e)
                self.send_response(502)
                self.send_header("Content-Length", str(len(err)))
                self.end_headers()
                if body_too:
                    self.wfile.write(err.encode())
                return
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", _TYPES.get(posixpath.splitext(key)[1].lower(),
                                                        "application/octet-stream"))
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            if body_too:
                self.wfile.write(data)

        def do_GET(self):
            self._answer(True)

        def do_HEAD(self):
            self._answer(False)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    served.base = "http://127.0.0.1:%d" % httpd.server_address[1]
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)


def _media_urls(master_url, timeout=30):
    with urllib.request.urlopen(master_url, timeout=timeout) as r:
        text = r.read().decode("utf-8")
    urls, take_next = [], False
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#EXT-X-STREAM-INF"):
            take_next = True
        elif line.startswith("#EXT-X-MEDIA:"):
            m = re.search(r'URI="([^"]*)"', line)
            if m:
                urls.append(urllib.parse.urljoin(master_url, m.group(1)))
        elif not line.startswith("#") and take_next:
            urls.append(urllib.parse.urljoin(master_url, line))
            take_next = False
    return urls


def decode_all(master_url, timeout=300):
    """Decode every media playlist the master names with ffmpeg over HTTP
    (-v error -map 0 -f null -).  Returns {url: seconds}; AssertionError
    unless every run exits 0 with nothing on stderr."""
    import time
    urls = _media_urls(master_url)
    if not urls:
        raise AssertionError("decode_all: %s names no media playlist" % master_url)
    bad, took = [], {}
    for url in urls:
        t0 = time.monotonic()
        r = subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-v", "error", "-i", url,
                            "-map", "0", "-f", "null", "-"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        took[url] = time.monotonic() - t0
        if r.returncode != 0 or r.stderr.strip():
            bad.append("%s: exit %d: %s" % (url, r.returncode, r.stderr.strip()[-800:]))
    if bad:
        raise AssertionError("decode_all: ffmpeg failed on %d of %d playlists:\n  %s"
                             % (len(bad), len(urls), "\n  ".join(bad)))
    return took


def _is_mpd(url):
    """True when play.js plays url as DASH: its path ends in .mpd."""
    return urllib.parse.urlsplit(url).path.lower().endswith(".mpd")


def have_player(url=None):
    """(True, "") when play.js can run here, else (False, why).  With an
    .mpd url (DASH) it also needs dash.js in test/player/node_modules."""
    if not shutil.which("node"):
        return False, "node is not installed"
    if not os.access(CHROMIUM, os.X_OK):
        return False, "%s is not installed (apt-get install chromium)" % CHROMIUM
    needs = ["hls.js/dist/hls.min.js", "playwright-core/package.json"]
    if url is not None and _is_mpd(url):
        needs.append("dashjs/dist/modern/umd/dash.all.min.js")
    for need in needs:
        if not os.path.exists(os.path.join(PLAYER_DIR, "node_modules", need)):
            return False, "test/player/node_modules lacks %s (run test/player/setup.sh)" % need
    return True, ""


def play_in_browser(master_url, force_level=None, timeout=120, env=None, rate=4, check=True):
    """Play master_url to its end in headless Chromium with hls.js (see
    test/player/play.js).  Returns play.js's JSON result (plus returncode);
    with check, AssertionError unless it reached `ended` with no fatal
    error (and, with force_level, switched to that level).

    master_url may also be a DASH MPD (a path ending in .mpd): play.js then
    plays it with dash.js (test/player/dash-player.html) and the result has
    player "dash.js", dashjs_version and representations (video, sorted by
    bandwidth, lowest first: force_level indexes them) instead of
    hls_version and levels; every dash.js ERROR counts as fatal.  Check
    have_player(master_url) first: it also looks for dash.js then."""
    argv = [NODE, PLAY_JS, master_url, "--timeout", str(timeout), "--rate", str(rate)]
    if force_level is not None:
        argv += ["--force-level", str(int(force_level))]
    e = dict(os.environ)
    if env:
        e.update(env)
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=e, timeout=timeout + 90)
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    try:
        result = json.loads(line)
    except ValueError:
        raise AssertionError("play.js printed no JSON (exit %d): %s %s"
                             % (r.returncode, r.stdout[-500:], r.stderr[-1500:]))
    result["returncode"] = r.returncode
    if check and not (r.returncode == 0 and result.get("ok")):
        brief = {k: result.get(k) for k in ("reason", "ended", "fatal_errors", "errors", "video_errors",
                                              "page_errors", "http_errors", "levels", "level_switched",
                                              "frag_buffered", "audio_frag_buffered", "current_time",
                                              "duration", "buffered", "ready_state", "source_buffers",
                                              "eos_by_harness")}
        # The player's last events say where it stopped.
        brief["events"] = (result.get("events") or [])[-25:]
        if "representations" in result:   # DASH: levels are representations
            brief.pop("levels")
            brief["representations"] = result["representations"]
        raise AssertionError("playback failed (exit %d): %s\n%s"
                             % (r.returncode, json.dumps(brief)[:9000], r.stderr[-1000:]))
    return result
