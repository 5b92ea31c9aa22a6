"""Token highlighting: each token a span whose background grows with its activation; whitespace shown."""

from __future__ import annotations

import html

VISIBLE = {"\n": "↵", "\t": "⇥"}


def _visible(token: str) -> str:
    text = "".join(VISIBLE.get(c, c) for c in token)
    return html.escape(text).replace(" ", "&nbsp;") or "∅"


def highlight(tokens: list[str], acts: list[float], scale: float, center: int | None = None) -> str:
    """HTML of one context: orange background with opacity ``act / scale``; the centre token boxed."""
    spans = []
    for i, (token, act) in enumerate(zip(tokens, acts)):
        alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, float(act) / scale))
        border = "border-bottom:2px solid #111;" if i == center else ""
        spans.append(f'<span title="{html.escape(repr(token))}: {float(act):.3f}" style="background:'
                     f'rgba(255,120,0,{alpha:.2f});color:#111;padding:1px 1px;border-radius:3px;{border}">'
                     f"{_visible(token)}</span>")
    return ('<div style="font-family:ui-monospace,Menlo,Consolas,monospace;font-size:14px;line-height:1.9;'
            'white-space:normal;word-break:break-word;margin:2px 0">' + "".join(spans) + "</div>")
