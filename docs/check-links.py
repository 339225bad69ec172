#!/usr/bin/env python3
"""Checks every relative link in README.md and docs/*.md: the file exists, and a
#fragment names a heading of the target (GitHub slug rules). Run: python3 docs/check-links.py"""
import os, re, sys, glob
root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
files = [os.path.join(root, 'README.md')] + sorted(glob.glob(os.path.join(root, 'docs', '*.md')))

def slug(h):
    h = h.strip().lower()
    h = re.sub(r'[`*_]', lambda m: '' if m.group() != '_' else '_', h)
    h = re.sub(r'[^\w\- ]', '', h)   # drop punctuation, keep word chars, hyphen, space
    return h.replace(' ', '-')

def anchors(path):
    out, counts, fence = set(), {}, False
    for line in open(path, encoding='utf-8'):
        if line.startswith('```'):
            fence = not fence
            continue
        if fence:
            continue
        m = re.match(r'^(#{1,6})\s+(.*?)\s*#*\s*$', line)
        if m:
            s = slug(re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', m.group(2)))
            n = counts.get(s, 0)
            counts[s] = n + 1
            out.add(s if n == 0 else f'{s}-{n}')
    return out

bad = 0
checked = 0
for f in files:
    fence = False
    for no, line in enumerate(open(f, encoding='utf-8'), 1):
        if line.startswith('```'):
            fence = not fence
            continue
        if fence:
            continue
        for target in re.findall(r'\]\(([^)\s]+)\)', line):
            if re.match(r'^[a-z]+:', target):
                continue
            checked += 1
            path, _, frag = target.partition('#')
            dest = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
            if not os.path.exists(dest):
                print(f'{os.path.relpath(f, root)}:{no}: missing file {target}')
                bad += 1
                continue
            if frag:
                if not dest.endswith('.md'):
                    print(f'{os.path.relpath(f, root)}:{no}: fragment on non-Markdown {target}')
                    bad += 1
                elif frag not in anchors(dest):
                    print(f'{os.path.relpath(f, root)}:{no}: no heading #{frag} in {os.path.relpath(dest, root)}')
                    bad += 1
print(f'{checked} links checked, {bad} broken')
sys.exit(1 if bad else 0)
