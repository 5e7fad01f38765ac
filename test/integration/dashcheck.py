"""A strict checker for the DASH manifests (MPD) of dash-ladder packages,
and ffmpeg's own DASH reader decoding one over HTTP.  It leans on
hlscheck.py for fetching and measuring media, so that both manifests of a
package are held to the same measurements.

    summary = check_mpd(get, "vod/abc/manifest.mpd", source_duration=12.0,
                        expect_representations=["720p", "360p", "audio"])
    with hlscheck.serve(get) as srv:
        decode_mpd(srv.url("vod/abc/manifest.mpd"))

API:
  check_mpd(get, mpd_key, source_duration=None, expect_representations=None,
            jobs=2) -> summary dict
      get(key) -> bytes or None (thread-safe when jobs > 1).  Raises
      AssertionError listing every violation it found, one per line.
      expect_representations: None or the Representation ids in MPD order.
      Summary: mpd (key), duration (mediaPresentationDuration, s), keys
      (set: the MPD, every init segment and media segment it names),
      representations (MPD order: id, type, bandwidth, width, height,
      codecs, segments, timeline [(t, d) in s], duration, measured_peak,
      bytes).
  decode_mpd(url, timeout=300)
      ffmpeg -v error -i URL -map 0 -f null -: every Representation
      decoded by ffmpeg's dash demuxer; AssertionError unless it exits 0
      and prints nothing.

What check_mpd enforces (ISO/IEC 23009-1, and the shape cap-server writes):
  document: an MPD in the 2011 namespace; type static; profiles naming
    urn:mpeg:dash:profile:isoff-live:2011; mediaPresentationDuration and
    minBufferTime as xs:durations; no element outside MPD, Period,
    AdaptationSet, Representation, SegmentTemplate, SegmentTimeline, S;
    no BaseURL (URLs are relative to the MPD); one Period starting at 0.
  adaptation sets: contentType video or audio, at most one of each;
    mimeType video/mp4 or audio/mp4 to match; startWithSAP 1 or 2;
    maxWidth/maxHeight, when given, the largest Representation's.
  representations: unique ids; bandwidth a positive integer; codecs; video
    width, height, frameRate (N or N/D) and sar (N:D); audio
    audioSamplingRate and an AudioChannelConfiguration of the ISO/IEC
    23003-3 scheme (what DASH-IF's interoperability points ask for, on the
    Representation or its set); a SegmentTemplate (its own or its set's) with a
    timescale, initialization and media, and a SegmentTimeline whose S
    elements are contiguous (t, when given, where the previous ended),
    with d > 0 and r >= 0; template identifiers $RepresentationID$,
    $Number[%0Nd]$, $Bandwidth$, $Time$ and $$ only; every URL stays
    under the MPD's folder.
  objects: the init segment is ftyp + moov, every media segment an fMP4
    fragment, and each exists.
  media (ffprobe over init + segments): one stream, of the set's type;
    codecs equal to the RFC 6381 string of that stream (as hlscheck
    derives it); width x height as encoded; frameRate equal to its
    r_frame_rate, sar to its sample aspect ratio (1:1 when it gives none),
    audioSamplingRate to its sample rate, the channel count to its; each segment's measured
    duration within max(0.1 s, one frame) of its d, and its measured start
    (relative to segment 0) within max(1 ms, half a frame) of its t; every
    video segment starts with a keyframe; bandwidth between the measured
    peak (max bytes * 8 / d, this stream alone) and 1.25 x it.
  whole: mediaPresentationDuration within 1 ms of the longest timeline;
    with source_duration, each timeline within its longest segment of it;
    a set claiming segmentAlignment has identical timelines, and video
    Representations' measured segment starts agree within half a frame.
"""
import concurrent.futures
import fractions
import math
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import hlscheck

NS = "urn:mpeg:dash:schema:mpd:2011"
LIVE_PROFILE = "urn:mpeg:dash:profile:isoff-live:2011"
ELEMENTS = {"MPD", "Period", "AdaptationSet", "Representation", "SegmentTemplate",
            "SegmentTimeline", "S", "AudioChannelConfiguration"}
CHANNELS_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"
MIME = {"video": "video/mp4", "audio": "audio/mp4"}
START_TOLERANCE = 0.001        # s, or half a frame when that is longer
MPD_DURATION_TOLERANCE = 0.001  # s

_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_IDENT = re.compile(r"\$(RepresentationID|Number|Bandwidth|Time)(%0(\d+)d)?\$|\$\$")


def parse_duration(s):
    """Seconds of an xs:duration without years or months, or None."""
    m = _DURATION.match(s or "")
    if not m or s in ("P", "PT") or s.endswith("T"):
        return None
    d, h, mi, sec = m.groups()
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(sec or 0)


def _local(tag):
    return tag.split("}", 1)[1] if tag.startswith("{") else tag


def _int(el, name, where, probs, default=None, minimum=None):
    v = el.get(name)
    if v is None:
        if default is None:
            probs.add(where, "no @%s" % name)
        return default
    if not re.fullmatch(r"-?\d+", v):
        probs.add(where, "@%s=%r is not an integer" % (name, v))
        return default
    n = int(v)
    if minimum is not None and n < minimum:
        probs.add(where, "@%s=%d is below %d" % (name, n, minimum))
    return n


def expand(template, rep_id, number, bandwidth, time, where, probs):
    """A SegmentTemplate URL with its identifiers replaced."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name, width = m.group(1), m.group(3)
        value = {"RepresentationID": rep_id, "Number": number, "Bandwidth": bandwidth,
                 "Time": time}[name]
        if name == "RepresentationID":
            if width:
                probs.add(where, "a format tag on $RepresentationID$")
            return str(value)
        return ("%0" + width + "d") % value if width else str(value)
    rest = _IDENT.sub("", template)
    if "$" in rest:
        probs.add(where, "unknown identifier in template %r" % template)
    return _IDENT.sub(sub, template)


def _resolve(base, rel, where, probs):
    if rel.startswith("/") or "://" in rel or "\\" in rel:
        probs.add(where, "URL %r is not relative to the MPD" % rel)
        return None
    key = posixpath.normpath(posixpath.join(base, rel)) if base else posixpath.normpath(rel)
    if key.startswith("..") or (base and not key.startswith(base + "/")):
        probs.add(where, "URL %r leaves the MPD's folder" % rel)
        return None
    return key


def _timeline(tmpl, ts, where, probs):
    """[(t, d)] in timescale units from a SegmentTimeline."""
    tl = tmpl.find("{%s}SegmentTimeline" % NS)
    if tl is None:
        probs.add(where, "SegmentTemplate without a SegmentTimeline")
        return []
    out, now = [], None
    for i, s in enumerate(tl.findall("{%s}S" % NS)):
        at = "%s S[%d]" % (where, i)
        t = _int(s, "t", at, probs, default=-1)
        d = _int(s, "d", at, probs, minimum=1)
        r = _int(s, "r", at, probs, default=0, minimum=0)
        if d is None or d < 1 or r < 0:
            return out
        if t == -1:
            t = 0 if now is None else now
        elif now is not None and t != now:
            probs.add(at, "@t=%d but the previous S ends at %d: a gap or an overlap" % (t, now))
        for _ in range(r + 1):
            out.append((t, d))
            t += d
        now = t
    if not out:
        probs.add(where, "an empty SegmentTimeline")
    return out


def _check_document(root, key, probs):
    if root.tag != "{%s}MPD" % NS:
        probs.add(key, "the root is %r, not an MPD in %s" % (root.tag, NS))
        return None
    for el in root.iter():
        if not el.tag.startswith("{%s}" % NS) or _local(el.tag) not in ELEMENTS:
            probs.add(key, "unexpected element %r" % el.tag)
    probs.need(root.get("type") == "static", key, "@type=%r, not static" % root.get("type"))
    probs.need(LIVE_PROFILE in (root.get("profiles") or "").split(","), key,
               "@profiles=%r does not name %s" % (root.get("profiles"), LIVE_PROFILE))
    probs.need(parse_duration(root.get("minBufferTime")) is not None, key,
               "@minBufferTime=%r is not a duration" % root.get("minBufferTime"))
    dur = parse_duration(root.get("mediaPresentationDuration"))
    probs.need(dur is not None, key, "@mediaPresentationDuration=%r is not a duration"
               % root.get("mediaPresentationDuration"))
    periods = root.findall("{%s}Period" % NS)
    if not probs.need(len(periods) == 1, key, "%d Periods, expected one" % len(periods)):
        return None
    start = periods[0].get("start")
    probs.need(start is None or parse_duration(start) == 0, key, "Period@start=%r, not 0" % start)
    return periods[0], dur


def _representations(period, key, base, probs):
    """Reads each AdaptationSet and Representation into plain dicts."""
    reps, kinds, ids = [], set(), set()
    for ai, aset in enumerate(period.findall("{%s}AdaptationSet" % NS)):
        where = "%s AdaptationSet[%d]" % (key, ai)
        kind = aset.get("contentType")
        if not probs.need(kind in MIME, where, "@contentType=%r, not video or audio" % kind):
            continue
        probs.need(kind not in kinds, where, "a second %s AdaptationSet" % kind)
        kinds.add(kind)
        probs.need(aset.get("mimeType") == MIME[kind], where,
                   "@mimeType=%r for %s" % (aset.get("mimeType"), kind))
        probs.need(aset.get("startWithSAP") in ("1", "2"), where,
                   "@startWithSAP=%r: segments must start with a stream access point"
                   % aset.get("startWithSAP"))
        set_tmpl = aset.find("{%s}SegmentTemplate" % NS)
        members = []
        for ri, rep in enumerate(aset.findall("{%s}Representation" % NS)):
            rw = "%s Representation[%d]" % (where, ri)
            rid = rep.get("id")
            if not probs.need(rid and not re.search(r"\s", rid), rw, "@id=%r" % rid):
                continue
            probs.need(rid not in ids, rw, "@id=%r repeated" % rid)
            ids.add(rid)
            rw = "%s Representation %r" % (key, rid)
            r = {"id": rid, "type": kind, "at": rw, "set": ai,
                 "bandwidth": _int(rep, "bandwidth", rw, probs, minimum=1),
                 "codecs": rep.get("codecs") or aset.get("codecs"),
                 "width": _int(rep, "width", rw, probs) if kind == "video" else None,
                 "height": _int(rep, "height", rw, probs) if kind == "video" else None}
            probs.need(bool(r["codecs"]), rw, "no @codecs")
            _stream_fields(rep, aset, kind, r, probs)
            tmpl = rep.find("{%s}SegmentTemplate" % NS)
            tmpl = tmpl if tmpl is not None else set_tmpl
            if not probs.need(tmpl is not None, rw, "no SegmentTemplate"):
                continue
            ts = _int(tmpl, "timescale", rw, probs, minimum=1) or 1
            number = _int(tmpl, "startNumber", rw, probs, default=1, minimum=0)
            r["timescale"] = ts
            r["timeline"] = _timeline(tmpl, ts, rw, probs)
            init, media = tmpl.get("initialization"), tmpl.get("media")
            if not probs.need(init and media, rw, "SegmentTemplate without initialization or media"):
                continue
            r["init_key"] = _resolve(base, expand(init, rid, 0, r["bandwidth"], 0, rw, probs), rw, probs)
            r["seg_keys"] = [_resolve(base, expand(media, rid, number + i, r["bandwidth"], t, rw, probs),
                                      rw, probs) for i, (t, _) in enumerate(r["timeline"])]
            members.append(r)
        probs.need(members, where, "an AdaptationSet without Representations")
        if kind == "video" and members and aset.get("maxWidth"):
            probs.need(aset.get("maxWidth") == str(max(m["width"] or 0 for m in members)) and
                       aset.get("maxHeight") == str(max(m["height"] or 0 for m in members)), where,
                       "@maxWidth/@maxHeight are not the largest Representation's")
        if aset.get("segmentAlignment") == "true" and len(members) > 1:
            secs = [[(t / m["timescale"], d / m["timescale"]) for t, d in m["timeline"]] for m in members]
            for m, s in zip(members[1:], secs[1:]):
                probs.need(len(s) == len(secs[0]) and all(
                    abs(a[0] - b[0]) <= START_TOLERANCE and abs(a[1] - b[1]) <= START_TOLERANCE
                    for a, b in zip(s, secs[0])), m["at"],
                    "segmentAlignment=true but its timeline differs from %r's" % members[0]["id"])
        reps.extend(members)
    return reps


def _stream_fields(rep, aset, kind, r, probs):
    """@frameRate and @sar of a video Representation, @audioSamplingRate
    and AudioChannelConfiguration of an audio one (its own or its set's)."""
    def own(name):
        return rep.get(name) or aset.get(name)
    rw = r["at"]
    if kind == "video":
        fr, sar = own("frameRate"), own("sar")
        r["frame_rate"] = None
        if probs.need(fr is not None and re.match(r"^[1-9]\d*(/[1-9]\d*)?$", fr), rw,
                      "@frameRate=%r, not N or N/D" % fr):
            r["frame_rate"] = fractions.Fraction(fr)
        r["sar"] = sar if probs.need(sar is not None and re.match(r"^[1-9]\d*:[1-9]\d*$", sar), rw,
                                     "@sar=%r, not N:D" % sar) else None
        return
    r["sample_rate"] = _int(rep if rep.get("audioSamplingRate") else aset, "audioSamplingRate", rw,
                            probs, minimum=1)
    acc = rep.find("{%s}AudioChannelConfiguration" % NS)
    acc = acc if acc is not None else aset.find("{%s}AudioChannelConfiguration" % NS)
    r["channels"] = None
    if probs.need(acc is not None, rw, "no AudioChannelConfiguration"):
        if probs.need(acc.get("schemeIdUri") == CHANNELS_SCHEME, rw,
                      "AudioChannelConfiguration@schemeIdUri=%r, not %s"
                      % (acc.get("schemeIdUri"), CHANNELS_SCHEME)):
            r["channels"] = _int(acc, "value", rw + " AudioChannelConfiguration", probs, minimum=1)


def _sar(s):
    """ffprobe's sample_aspect_ratio as a Fraction; 1 when it gives none."""
    m = re.match(r"^(\d+):(\d+)$", s or "")
    return fractions.Fraction(int(m.group(1)), int(m.group(2))) if m and int(m.group(1)) and int(m.group(2)) \
        else fractions.Fraction(1)


def _media_fields(r, st, probs):
    """The manifest's frame rate, pixel aspect, sample rate and channels
    against what ffprobe reads from the stream."""
    if r["type"] == "video":
        if r.get("frame_rate") is not None:
            want = st.get("r_frame_rate") or "0/1"
            got = fractions.Fraction(want) if re.match(r"^\d+/[1-9]\d*$", want) else None
            probs.need(got == r["frame_rate"], r["at"],
                       "@frameRate is %s but the media's frame rate is %s" % (r["frame_rate"], want))
        if r.get("sar") is not None:
            a, b = r["sar"].split(":")
            probs.need(fractions.Fraction(int(a), int(b)) == _sar(st.get("sar")), r["at"],
                       "@sar is %s but the media's sample aspect ratio is %s" % (r["sar"], st.get("sar")))
        return
    if r.get("sample_rate") is not None:
        probs.need(str(r["sample_rate"]) == str(st.get("sample_rate")), r["at"],
                   "@audioSamplingRate is %s but the media's sample rate is %s"
                   % (r["sample_rate"], st.get("sample_rate")))
    if r.get("channels") is not None:
        probs.need(r["channels"] == st.get("channels"), r["at"],
                   "AudioChannelConfiguration says %s channels but the media have %s"
                   % (r["channels"], st.get("channels")))


def _measure(r, get, ex, tmp, n, probs):
    """Fetches r's objects and measures them; fills r's measured facts."""
    r.update(segments=len(r.get("seg_keys", [])), bytes=0, measured_peak=None, starts=None,
             frame=None)
    if r.get("init_key") is None or None in r.get("seg_keys", [None]):
        return set()
    keys = set()
    init = get(r["init_key"])
    if not probs.need(init is not None, r["at"], "init segment %r does not exist" % r["init_key"]):
        return keys
    keys.add(r["init_key"])
    probs.need(hlscheck._sniff(init) == "init", r["at"],
               "%r is not an init segment (ftyp + moov)" % r["init_key"])
    path = os.path.join(tmp, "%d.mp4" % n)
    ranges, sizes = [], []
    with open(path, "wb") as f:
        f.write(init)
        for k, data in ex.map(lambda k: (k, get(k)), r["seg_keys"]):
            if not probs.need(data is not None, r["at"], "segment %r does not exist" % k):
                return keys
            keys.add(k)
            probs.need(hlscheck._sniff(data) == "fmp4", r["at"], "%r is not an fMP4 fragment" % k)
            start = f.tell()
            f.write(data)
            ranges.append((start, f.tell()))
            sizes.append(len(data))
    r["bytes"] = sum(sizes)
    rc, err, streams, segs = hlscheck._measure(path, ranges)
    if not probs.need(rc == 0 and len(streams) == 1, r["at"],
                      "ffprobe: rc %d, %d streams (one expected) %s" % (rc, len(streams), hlscheck._clip(err))):
        return keys
    probs.need(not err, r["at"], "ffprobe complains: %s" % hlscheck._clip(err))
    idx, st = next(iter(streams.items()))
    probs.need(st["type"] == r["type"], r["at"], "a %s stream in a %s set" % (st["type"], r["type"]))
    if r["type"] == "video":
        probs.need((r["width"], r["height"]) == (st["width"], st["height"]), r["at"],
                   "%sx%s but the media are %sx%s" % (r["width"], r["height"], st["width"], st["height"]))
    want = hlscheck._stream_codec(st, path)
    probs.need(want is not None and (r["codecs"] or "").lower() == want.lower(), r["at"],
               "@codecs=%r but the media are %r" % (r["codecs"], want))
    _media_fields(r, st, probs)
    ts, frame = r["timescale"], st["frame"] or 0
    r["frame"] = frame
    t0 = r["timeline"][0][0] / ts if r["timeline"] else 0
    starts = []
    for i, ((t, d), seg) in enumerate(zip(r["timeline"], segs)):
        m = seg.get(idx)
        at = "%s segment %d" % (r["at"], i)
        if not probs.need(m is not None, at, "no packets"):
            return keys
        probs.need(abs(m["span"] - d / ts) <= max(hlscheck.DURATION_TOLERANCE, frame), at,
                   "d is %.6f s but the segment measures %.6f s" % (d / ts, m["span"]))
        starts.append(m["start"])
        rel = m["start"] - (starts[0] if starts else m["start"])
        probs.need(abs(rel - (t / ts - t0)) <= max(START_TOLERANCE, frame / 2), at,
                   "t is %.6f s after segment 0 but it starts %.6f s after it" % (t / ts - t0, rel))
        if r["type"] == "video":
            probs.need(m["first_key"], at, "does not start with a keyframe")
    r["starts"] = starts
    peak = max((sz * 8 / (d / ts) for sz, (_, d) in zip(sizes, r["timeline"]) if d), default=None)
    r["measured_peak"] = peak
    if peak and r["bandwidth"]:
        probs.need(math.floor(peak) <= r["bandwidth"] <= hlscheck.BANDWIDTH_HEADROOM * peak, r["at"],
                   "@bandwidth=%d but this stream's measured peak is %.0f b/s (allowed up to %.2f x)"
                   % (r["bandwidth"], peak, hlscheck.BANDWIDTH_HEADROOM))
    return keys


def check_mpd(get, mpd_key, source_duration=None, expect_representations=None, jobs=2):
    """Check the MPD at mpd_key and everything it names (module docstring)."""
    probs = hlscheck._Problems()
    data = get(mpd_key)
    if data is None:
        raise AssertionError("DASH check failed: %r does not exist" % mpd_key)
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise AssertionError("DASH check failed: %r has a DOCTYPE or entities" % mpd_key)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise AssertionError("DASH check failed: %r is not XML: %s" % (mpd_key, e))
    doc = _check_document(root, mpd_key, probs)
    if doc is None:
        probs.raise_if_any()
    period, mpd_dur = doc
    base = posixpath.dirname(mpd_key)
    reps = _representations(period, mpd_key, base, probs)
    keys = {mpd_key}
    tmp = tempfile.mkdtemp(prefix="dashcheck-")
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
            for n, r in enumerate(reps):
                keys |= _measure(r, get, ex, tmp, n, probs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    totals = {r["id"]: sum(d for _, d in r.get("timeline", [])) / r.get("timescale", 1) for r in reps}
    longest = max(totals.values(), default=0)
    if mpd_dur is not None:
        probs.need(abs(mpd_dur - longest) <= MPD_DURATION_TOLERANCE, mpd_key,
                   "@mediaPresentationDuration is %.6f s but the longest timeline lasts %.6f s"
                   % (mpd_dur, longest))
    for r in reps:
        tl = r.get("timeline") or []
        if source_duration is not None and tl:
            worst = max(d for _, d in tl) / r["timescale"]
            probs.need(abs(totals[r["id"]] - source_duration) <= worst, r["at"],
                       "lasts %.3f s, not within one segment (%.3f s) of the source's %.3f s"
                       % (totals[r["id"]], worst, source_duration))
    video = [r for r in reps if r["type"] == "video" and r.get("starts")]
    for r in video[1:]:
        a, b = video[0]["starts"], r["starts"]
        if len(a) != len(b):
            probs.add(r["at"], "%d segments but %r has %d: keyframes not aligned"
                      % (len(b), video[0]["id"], len(a)))
            continue
        half = max(video[0]["frame"] or 0, r["frame"] or 0) / 2
        for i in range(1, len(a)):
            if abs((a[i] - a[0]) - (b[i] - b[0])) > max(half, START_TOLERANCE):
                probs.add(r["at"], "segment %d starts %.6f s in, %.6f s in %r: keyframes not aligned"
                          % (i, b[i] - b[0], a[i] - a[0], video[0]["id"]))
                break
    if expect_representations is not None:
        probs.need([r["id"] for r in reps] == list(expect_representations), mpd_key,
                   "Representations %s, expected %s" % ([r["id"] for r in reps],
                                                        list(expect_representations)))
    probs.raise_if_any()
    out = []
    for r in reps:
        ts = r["timescale"]
        out.append({"id": r["id"], "type": r["type"], "bandwidth": r["bandwidth"], "width": r["width"],
                    "height": r["height"], "codecs": r["codecs"], "segments": r["segments"],
                    "timeline": [(t / ts, d / ts) for t, d in r["timeline"]], "duration": totals[r["id"]],
                    "measured_peak": r["measured_peak"], "bytes": r["bytes"]})
    return {"mpd": mpd_key, "duration": mpd_dur, "keys": keys, "representations": out}


def decode_mpd(url, timeout=300):
    """ffmpeg's dash demuxer decodes every Representation of url."""
    r = subprocess.run([hlscheck.FFMPEG, "-nostdin", "-v", "error", "-i", url, "-map", "0",
                        "-f", "null", "-"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0 or r.stderr.strip():
        raise AssertionError("ffmpeg could not decode %s: rc %d %s" % (url, r.returncode,
                                                                       hlscheck._clip(r.stderr)))
