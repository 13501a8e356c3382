#!/usr/bin/env python3
"""Draw benchmark figures as an SVG bar chart, ns per 4 KiB page.

Usage:
  cargo run --release --example bench_summary | python3 benches/plot.py > benches/summary.svg
  python3 benches/plot.py "criterion, one run" < figures.tsv > benches/criterion.svg

Reads `case=<name> ns_per_page=<f>` lines (bench_summary) or `<name><TAB><f>`
lines (criterion figures converted to ns per element); other lines are ignored.
Draws one horizontal bar per case on a logarithmic axis (the figures span three
orders of magnitude). Standard library only.
"""
import math
import re
import sys

cases = []
for line in sys.stdin:
    m = re.match(r"case=(\S+) ns_per_page=([0-9.]+)", line) or re.match(
        r"([^\t]+)\t([0-9.]+)$", line.rstrip("\n")
    )
    if m:
        cases.append((m.group(1), float(m.group(2))))
if not cases:
    sys.exit("no case lines on stdin")

title = sys.argv[1] if len(sys.argv) > 1 else "one bench_summary run"
bar_h, gap, top = 22, 8, 40
left = 20 + 7 * max(len(name) for name, _ in cases)
width = 520
height = top + len(cases) * (bar_h + gap) + 40
lo = 10 ** math.floor(math.log10(min(v for _, v in cases)))
hi = 10 ** math.ceil(math.log10(max(v for _, v in cases)))


def x(v):
    return left + width * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))


out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
    'font-family="sans-serif" font-size="12">',
    '<rect width="100%" height="100%" fill="white"/>',
    f'<text x="{left}" y="20" font-size="14">ns per 4 KiB page (log scale), {title}</text>',
]
decade = lo
while decade <= hi * 1.0001:
    out.append(f'<line x1="{x(decade):.1f}" y1="{top - 5}" x2="{x(decade):.1f}" y2="{height - 30}" stroke="#ccc"/>')
    out.append(f'<text x="{x(decade):.1f}" y="{height - 15}" text-anchor="middle">{decade:g}</text>')
    decade *= 10
for i, (name, value) in enumerate(cases):
    y = top + i * (bar_h + gap)
    colour = "#c0504d" if name.startswith("linux") else "#4f81bd"
    out.append(f'<text x="{left - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{name}</text>')
    out.append(f'<rect x="{left}" y="{y}" width="{max(x(value) - left, 1):.1f}" height="{bar_h}" fill="{colour}"/>')
    out.append(f'<text x="{x(value) + 4:.1f}" y="{y + bar_h * 0.7:.1f}">{value:g}</text>')
out.append("</svg>")
print("\n".join(out))
