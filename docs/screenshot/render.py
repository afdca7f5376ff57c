#!/usr/bin/env python3
"""Render a tmux pane capture with escape sequences (`tmux capture-pane -e -p`)
as a PNG, cell by cell, in DejaVu Sans Mono: how docs/dashboard.png was made
from a real `bottle dashboard` run (see docs/screenshot/README.md).

Usage: render.py CAPTURE.txt OUT.png [COLUMNS ROWS]
Needs Pillow (`pip install pillow`) and fonts-dejavu-core.
"""

import re
import sys

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
SIZE = 16
BG = (24, 24, 28)
FG = (220, 220, 215)
# The 16 basic colours (xterm's defaults, a little softened).
BASIC = [
    (40, 40, 46), (215, 80, 80), (110, 190, 100), (220, 190, 90),
    (100, 150, 220), (190, 120, 200), (90, 190, 200), (200, 200, 195),
    (110, 110, 120), (240, 110, 110), (140, 220, 130), (240, 215, 120),
    (130, 175, 240), (215, 150, 225), (120, 215, 225), (250, 250, 245),
]


# The box-drawing characters ratatui draws, as the sides of the cell their lines reach.
BOX = {"─": "lr", "│": "ud", "┌": "rd", "┐": "ld", "└": "ru", "┘": "lu", "├": "udr", "┤": "udl", "┬": "lrd", "┴": "lru", "┼": "lrud"}


def indexed(n):
    """xterm's 256-colour palette."""
    if n < 16:
        return BASIC[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    grey = 8 + (n - 232) * 10
    return (grey, grey, grey)


class Pen:
    def __init__(self):
        self.reset()

    def reset(self):
        self.fg, self.bg, self.bold, self.reverse, self.dim = None, None, False, False, False

    def apply(self, params):
        codes = [int(p) if p else 0 for p in params.split(";")] if params else [0]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c == 0:
                self.reset()
            elif c == 1:
                self.bold = True
            elif c == 2:
                self.dim = True
            elif c == 7:
                self.reverse = True
            elif c == 22:
                self.bold = self.dim = False
            elif c == 27:
                self.reverse = False
            elif 30 <= c <= 37:
                self.fg = BASIC[c - 30]
            elif 90 <= c <= 97:
                self.fg = BASIC[c - 90 + 8]
            elif c == 39:
                self.fg = None
            elif 40 <= c <= 47:
                self.bg = BASIC[c - 40]
            elif c == 49:
                self.bg = None
            elif c in (38, 48) and i + 1 < len(codes):
                if codes[i + 1] == 5 and i + 2 < len(codes):
                    colour = indexed(codes[i + 2])
                    i += 2
                elif codes[i + 1] == 2 and i + 4 < len(codes):
                    colour = tuple(codes[i + 2:i + 5])
                    i += 4
                else:
                    colour = None
                if c == 38:
                    self.fg = colour
                else:
                    self.bg = colour
                i += 1
            i += 1

    def colours(self):
        fg, bg = self.fg or FG, self.bg or BG
        if self.dim and self.fg is None:
            fg = (140, 140, 140)
        if self.reverse:
            fg, bg = bg, fg
        return fg, bg


def cells(text, columns):
    """Each line of the capture as a list of (char, fg, bg, bold)."""
    pen = Pen()
    rows = []
    for line in text.split("\n"):
        row = []
        for part in re.split(r"(\x1b\[[0-9;]*m)", line):
            match = re.fullmatch(r"\x1b\[([0-9;]*)m", part)
            if match:
                pen.apply(match.group(1))
                continue
            for ch in part:
                fg, bg = pen.colours()
                row.append((ch, fg, bg, pen.bold))
        while len(row) < columns:
            row.append((" ", FG, BG, False))
        rows.append(row[:columns])
    return rows


def main():
    capture, out = sys.argv[1], sys.argv[2]
    columns = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    lines = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    text = open(capture, encoding="utf-8").read().rstrip("\n")
    rows = cells(text, columns)[:lines]
    font, bold = ImageFont.truetype(FONT, SIZE), ImageFont.truetype(BOLD, SIZE)
    width = round(font.getlength("M"))
    height = SIZE + 4
    pad = 12
    image = Image.new("RGB", (columns * width + 2 * pad, lines * height + 2 * pad), BG)
    draw = ImageDraw.Draw(image)
    for y, row in enumerate(rows):
        for x, (ch, fg, bg, is_bold) in enumerate(row):
            left, top = pad + x * width, pad + y * height
            if bg != BG:
                draw.rectangle([left, top, left + width - 1, top + height - 1], fill=bg)
            if ch in BOX:
                # Box lines drawn to the cell's edges, so they join across rows.
                cx, cy = left + width // 2, top + height // 2
                for side in BOX[ch]:
                    x2, y2 = {"l": (left, cy), "r": (left + width, cy), "u": (cx, top), "d": (cx, top + height)}[side]
                    draw.line([(cx, cy), (x2, y2)], fill=fg, width=1)
            elif ch != " ":
                draw.text((left, top + 1), ch, font=bold if is_bold else font, fill=fg)
    image.save(out)


if __name__ == "__main__":
    main()
