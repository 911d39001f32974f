"""report.md and report.html from the figures of `jobs/report.py`.

Both are rendered from one list of sections (paragraphs, tables, pictures), so they say the same
thing. The HTML is self-contained: pictures are embedded as data URIs and every string from the
archive (keys, error messages) is escaped.
"""
from __future__ import annotations

import base64
import html as htmlmod

Block = tuple  # ("p", text) | ("table", headers, rows) | ("pictures", [(name, caption)], caption)


def _mb(n) -> str:
    return "n/a" if n is None else f"{n / 1e6:,.2f} MB"


def _f(v, spec: str, suffix: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{suffix}"


def _pct(v) -> str:
    return _f(None if v is None else 100 * v, ".1f", " %")


def _group_rows(groups: list[dict], label: str) -> list[list[str]]:
    return [[g[label], f"{g['images']:,}", f"{g.get('jpeg_lossless', 0):,}", f"{g['kept_as_source']:,}",
             _mb(g["bytes_in"]), _mb(g["bytes_out"]), _pct(g["savings"]), _f(g["mean_bpp"], ".3f"),
             _f(g["mean_psnr"], ".2f", " dB")] for g in groups]


GROUP_HEADERS = ["images", "JPEG, lossless", "kept as source", "bytes in", "bytes out", "savings", "mean bpp",
                 "mean PSNR"]
CODEC_HEADERS = ["codec", "images", "share of images", "bytes in", "bytes out", "bytes saved", "savings",
                 "share of the archive's bytes"]


def _codec_rows(codecs: list[dict]) -> list[list[str]]:
    return [[c["label"], f"{c['images']:,}", _pct(c["share_of_images"]), _mb(c["bytes_in"]), _mb(c["bytes_out"]),
             _mb(c["saved_bytes"]), _pct(c["savings"]), _pct(c["share_of_bytes_out"])] for c in codecs]


def sections(fig: dict, pictures: dict[str, bytes]) -> list[tuple[str, str, list[Block]]]:
    """(id, title, blocks) for each section of the report."""
    h, s, d = fig["headline"], fig["storage"], fig["distributions"]
    out = []
    summary = [
        ("p", f"{h['keys']:,} images: {h['ok']:,} ok ({h['coded_by_tng']:,} coded by TNG, {h.get('jpeg_lossless', 0):,} "
              f"JPEGs recompressed losslessly with JPEG XL, {h['kept_as_source']:,} kept as their source file), "
              f"{h['errors']:,} errors."),
        ("table", ["figure", "value"], [
            ["bytes in (source files of ok rows)", _mb(h["bytes_in"])],
            ["bytes out (archived)", _mb(h["bytes_out"])],
            ["bytes saved", _mb(h.get("saved_bytes"))],
            ["savings", _pct(h["savings"])],
            ["compression ratio", _f(h["ratio"], ".2f", "×")],
            ["megapixels", _f(h["megapixels"], ",.1f")],
            ["mean bpp (lossy rows)", _f(h["mean_bpp"], ".3f")],
            ["mean PSNR (lossy rows)", _f(h["mean_psnr"], ".2f", " dB")],
            ["mean MS-SSIM (lossy rows)", _f(h["mean_ms_ssim"], ".4f")],
            ["models (id: images)", ", ".join(f"{k}: {v}" for k, v in h["models"].items()) or "n/a"],
            ["qualities (quality: images)", ", ".join(f"{k}: {v}" for k, v in h["qualities"].items()) or "n/a"],
            ["shards", f"{s['shards']} ({len(s['unreadable_shards'])} unreadable), {s['rows_in_shards']:,} rows"],
            ["runs", f"{s['runs_complete']} complete, {len(s['runs_incomplete'])} without a manifest"],
            ["encoded", f"{s['first_encoded']} … {s['last_encoded']}"],
        ]),
    ]
    for u in s["unreadable_shards"]:
        summary.append(("p", f"Warning: shard {u['shard']} could not be read ({u['reason']}); its rows are not counted."))
    out.append(("summary", f"Archive {fig['archive']}", summary))

    if fig.get("by_codec"):
        out.append(("codecs", "By codec", [
            ("p", "What each way of storing a file saved. JPEGs recompressed losslessly and files kept as their "
                  "source give back the original file byte for byte; the notes on kept files say why they were "
                  "kept (per row, in the archive's `note` column)."),
            ("table", CODEC_HEADERS, _codec_rows(fig["by_codec"]))]
            + ([("table", ["why kept as source", "images", "example keys"],
                 [[k["reason"], f"{k['count']:,}", ", ".join(k["keys"])] for k in fig["kept"]])]
               if fig.get("kept") else [])))

    if fig.get("codec_choice"):
        out.append(("choice", "Codec choice per image", _choice_blocks(fig["codec_choice"])))

    dist = [("p", "Per-image figures of the lossy rows (TNG, AVIF, JPEG XL; the other forms are lossless).")]
    names = {"bpp": "bpp", "psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM"}
    rows = [[names[k]] + [_f(v[c], ".4g") for c in ("mean", "min", "p5", "p25", "median", "p75", "p95", "max")]
            for k, v in d.items() if v]
    if rows:
        dist.append(("table", ["figure", "mean", "min", "5 %", "25 %", "median", "75 %", "95 %", "max"], rows))
    pics = [(f"plots/{k}.png", f"Distribution of {names[k]}") for k in d if f"plots/{k}.png" in pictures]
    if pics:
        dist.append(("pictures", pics, ""))
    out.append(("distributions", "Distributions", dist))

    out.append(("formats", "By source format",
                [("table", ["format"] + GROUP_HEADERS, _group_rows(fig["by_format"], "format"))]))
    out.append(("resolutions", "By resolution",
                [("table", ["resolution"] + GROUP_HEADERS, _group_rows(fig["by_resolution"], "resolution"))]))

    worst = [("p", f"The {len(fig['worst'])} images with the lowest PSNR. Thumbnails of the original (where it "
                   "is reachable and unchanged) and of the decoded image, then the same 1:1 crop of each where "
                   "the error is largest.")] if fig["worst"] else [("p", "No image was coded lossily.")]
    if fig["worst"]:
        worst.append(("table", ["#", "key", "codec", "size", "bpp", "PSNR", "MS-SSIM", "TNG quality", "original"],
                      [[str(i), w["key"], w.get("codec", "tng"), f"{w['width']}×{w['height']}", f"{w['bpp']:.3f}",
                        f"{w['psnr']:.2f} dB", _f(w["ms_ssim"], ".4f"), _f(w["quality"], "g"),
                        w.get("original", "not looked up")]
                       for i, w in enumerate(fig["worst"], 1)]))
    for i, w in enumerate(fig["worst"], 1):
        p = w.get("pictures", {})
        order = [("original", "original"), ("decoded", "decoded"), ("original-crop", "original, 1:1 crop"),
                 ("decoded-crop", "decoded, 1:1 crop")]
        pics = [(f"thumbs/{p[k]}", label) for k, label in order if k in p]
        if pics:
            crop = w.get("crop", {})
            worst.append(("pictures", pics, f"#{i} {w['key']}: {w['psnr']:.2f} dB at {w['bpp']:.3f} bpp; crop at "
                                             f"x={crop.get('x')}, y={crop.get('y')}"))
    out.append(("worst", "Worst images by PSNR", worst))

    errs = [("p", f"{h['errors']:,} inputs could not be archived.")]
    if fig["errors"]:
        errs.append(("table", ["reason", "images", "example keys"],
                     [[e["reason"], f"{e['count']:,}", ", ".join(e["keys"])] for e in fig["errors"]]))
    out.append(("errors", "Errors by reason", errs))

    if "rd_study" in fig:
        out.append(("rd-study", "Rate–distortion study on sampled sources", _rd_blocks(fig["rd_study"], pictures)))
    return out


def _choice_blocks(c: dict) -> list[Block]:
    rows = [[x["label"], f"{x['chosen']:,}", f"{x['images_reached']:,}", f"{x['images_not_reached']:,}",
             _mb(x["bytes_needed"]), _mb(x["bytes_kept_same_images"]), _pct(x["saving_vs_codec"])] for x in c["codecs"]]
    return [("p", f"{c['images']:,} images were coded at a target PSNR each (the `target_psnr` of their rows) by "
                  f"whichever codec made the smallest file reaching it; they hold {_mb(c['bytes_kept'])}. Each row "
                  "records what every codec it tried needed for its target: summed here, what each single codec "
                  "would have cost for the images it reaches (where a search stopped once it could not win, "
                  "its lower bound: the codec would have cost at least that), against what the archive holds "
                  "for the same images."),
            ("table", ["codec", "images stored", "images it reaches", "images not tried or not reached",
                       "bytes it would need", "bytes kept for them", "saving vs that codec alone"], rows)]


def _refined(st: dict) -> str:
    """The RD study's effort level (reports written before effort levels say how many refinement steps)."""
    if "effort" in st:
        return f", effort {st['effort']}"
    return f", refined {st['refine']} steps" if st.get("refine") else ""


def _rd_blocks(st: dict, pictures: dict) -> list[Block]:
    blocks: list[Block] = [("p", f"{len(st['images'])} source images from {st['source']} (asked for {st['requested']}, "
                                 f"spread over the archive's keys, seed {st['seed']}), each coded by TNG (model "
                                 f"{st['model_id']}{_refined(st)}) at qualities 1–8 and by {', '.join(st['baselines']) or 'no baseline'} "
                                 "(Pillow) over their quality ranges. bpp from the whole file; PSNR on RGB; means over "
                                 "images. BD-rates over 0.1–1.5 bpp; negative = TNG needs fewer bits.")]
    if st["missing_baselines"]:
        blocks.append(("p", f"Not available in this Pillow: {', '.join(st['missing_baselines'])}."))
    if st["failed"]:
        blocks.append(("table", ["sampled key not measured", "reason"], [[f["key"], f["error"]] for f in st["failed"]]))
    if "error" in st:
        blocks.append(("p", st["error"]))
        return blocks
    blocks.append(("table", ["TNG against", "BD-rate (PSNR)", "BD-PSNR", "PSNR range used", "BD-rate (MS-SSIM)"],
                   [[r["anchor"], _f(r["psnr"]["bd_rate"], "+.1f", " %"), _f(r["psnr"]["bd_quality"], "+.2f", " dB"),
                     "–".join(f"{x:.2f}" for x in r["psnr"]["range"]) if r["psnr"]["range"] else
                     "no overlap: " + r["psnr"].get("error", ""),
                     _f(r["msssim_db"]["bd_rate"], "+.1f", " %")] for r in st["bd"]]))
    if "plots/rd.png" in pictures:
        blocks.append(("pictures", [("plots/rd.png", "Mean RD curves")], ""))
    heads = ["target PSNR", "TNG quality", "TNG bpp", "savings vs source files", "projected archive size",
             "projected savings"] + [f"TNG size vs {b}" for b in st["baselines"]]
    rows = [[f"{t['psnr']:g} dB", _f(t["quality"], ".2f"), _f(t["tng_bpp"], ".3f"), _pct(t["savings_vs_source"]),
             _mb(t["projected_archive_bytes"]), _pct(t["projected_savings"])]
            + [_f(None if t[f"size_vs_{b.lower()}"] is None else 100 * t[f"size_vs_{b.lower()}"], "+.1f", " %")
               for b in st["baselines"]] for t in st["targets"]]
    blocks.append(("p", f"Quality to choose for a target mean PSNR, interpolated on the mean curves. Savings vs source "
                        f"compare with the sampled files as stored (mean {st['source_bpp']:.3f} bpp); the projection "
                        "applies that bpp to every pixel of the archive's ok rows; 'TNG size vs JPEG' etc. is TNG's bpp over "
                        "the baseline's at the same PSNR, minus one (negative: TNG is smaller). n/a: the target is "
                        "outside the measured range."))
    blocks.append(("table", heads, rows))
    mean_rows = [[name, f"{p['setting']:g}", f"{p['bpp']:.4f}", f"{p['psnr']:.2f}", f"{p['msssim']:.4f}"]
                 for name, pts in st["curves"].items() for p in pts]
    blocks.append(("table", ["codec", "quality", "mean bpp", "mean PSNR (dB)", "mean MS-SSIM"], mean_rows))
    return blocks


# ---------------------------------------------------------------------------------------------- markdown

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(fig: dict, pictures: dict[str, bytes]) -> str:
    lines = ["# TNG archive report", "", f"Generated {fig['generated_at']}. Figures in summary.json.", ""]
    for _, title, blocks in sections(fig, pictures):
        lines += [f"## {title}", ""]
        for b in blocks:
            if b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "table":
                lines.append("| " + " | ".join(_md_cell(c) for c in b[1]) + " |")
                lines.append("|" + "---|" * len(b[1]))
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b[2]]
                lines.append("")
            else:
                lines += [" ".join(f"![{cap}]({name})" for name, cap in b[1]), ""]
                if b[2]:
                    lines += [f"*{_md_cell(b[2])}*", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- HTML

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.7em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f4f6; } tr:nth-child(even) td { background: #fafafa; }
figure { display: inline-block; margin: .4em .8em .4em 0; } figcaption { font-size: .85em; color: #555; }
.pictures { margin: 1em 0; } .pictures > p { margin: 0; font-size: .9em; color: #333; }
img { max-width: 100%; border: 1px solid #eee; } nav a { margin-right: 1em; }
"""


def html(fig: dict, pictures: dict[str, bytes]) -> str:
    e = htmlmod.escape
    secs = sections(fig, pictures)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>TNG archive report: {e(fig['archive'])}</title>", f"<style>{CSS}</style></head><body>",
             "<h1>TNG archive report</h1>",
             f"<p>Generated {e(fig['generated_at'])}. Every figure is also in summary.json.</p>",
             "<nav>" + "".join(f'<a href="#{sid}">{e(title)}</a>' for sid, title, _ in secs) + "</nav>"]
    for sid, title, blocks in secs:
        parts.append(f'<section id="{sid}"><h2>{e(title)}</h2>')
        for b in blocks:
            if b[0] == "p":
                parts.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "table":
                parts.append("<table><thead><tr>" + "".join(f"<th>{e(str(c))}</th>" for c in b[1]) + "</tr></thead><tbody>")
                parts += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in b[2]]
                parts.append("</tbody></table>")
            else:
                parts.append('<div class="pictures">' + (f"<p>{e(b[2])}</p>" if b[2] else ""))
                for name, cap in b[1]:
                    data = base64.b64encode(pictures[name]).decode()
                    parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(cap)}" '
                                 f'data-name="{e(name)}"><figcaption>{e(cap)}</figcaption></figure>')
                parts.append("</div>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
