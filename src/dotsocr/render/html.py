"""HTML from dotsocr Markdown, for showing a page with its tables and formulas in a browser.

The Markdown comes from a model reading arbitrary documents, so it is untrusted. It is rendered
with raw HTML allowed (dots.ocr writes tables as HTML) and formulas turned into MathML, and
the whole result is then sanitized with nh3 against an allowlist: nothing produced before
that step needs to be trusted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape
from xml.etree.ElementTree import tostring

import nh3
from latex2mathml.converter import convert_to_element
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.texmath import texmath_plugin

_TEXT_TAGS = {
    *("p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code"),
    *("em", "strong", "b", "i", "u", "s", "del", "sub", "sup", "br", "hr", "a", "img", "span"),
    *("div", "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "colgroup", "col"),
}
# The MathML Core presentation elements and layout attributes that latex2mathml 3.81 emits.
# Left out: href (\href) and its colours (mathcolor, mathbackground), style and class.
_MATH_TAGS = {
    *("math", "mrow", "mi", "mn", "mo", "mtext", "mspace", "msub", "msup", "msubsup", "mfrac"),
    *("msqrt", "mroot", "mover", "munder", "munderover", "mtable", "mtr", "mtd", "mstyle"),
    *("mpadded", "mphantom", "menclose"),
}
_MATH_ATTRIBUTES = {
    *("xmlns", "display", "mathvariant", "mathsize", "stretchy", "fence", "separator", "form"),
    *("lspace", "rspace", "accent", "accentunder", "largeop", "movablelimits", "minsize"),
    *("maxsize", "linethickness", "columnalign", "columnspacing", "columnlines", "rowspacing"),
    *("rowlines", "displaystyle", "scriptlevel", "width", "height", "depth", "voffset"),
    *("notation", "linebreak"),
}
_CELL = {"colspan", "rowspan", "align"}
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    **{tag: _CELL for tag in ("th", "td")},
    **{tag: {"align"} for tag in ("tr", "thead", "tbody", "tfoot")},
    **{tag: {"span"} for tag in ("col", "colgroup")},
    "ol": {"start"},
    **{tag: _MATH_ATTRIBUTES for tag in _MATH_TAGS},
}
# Checked after nh3's own scheme check, on the decoded value. Pictures must be inline so
# that showing a page never fetches anything from another host.
_URL_OK = {
    "href": re.compile(r"(?:https?:|mailto:)", re.IGNORECASE),
    "src": re.compile(r"data:image/(?:png|jpeg|webp)[;,]", re.IGNORECASE),
}
_CLEANER = nh3.Cleaner(
    tags=_TEXT_TAGS | _MATH_TAGS,
    clean_content_tags={"script", "style", "template", "iframe", "noscript", "object", "svg"},
    attributes=_ATTRIBUTES,
    attribute_filter=lambda tag, name, value: (
        value.strip() if name not in _URL_OK or _URL_OK[name].match(value.strip()) else None
    ),
    url_schemes={"http", "https", "mailto", "data"},
    url_relative="deny",
    link_rel="noopener noreferrer",
    allowed_classes={"div": {"math-display", "table-wrap"}, "code": {"latex"}},
    strip_comments=True,
)
_CHAR_REF = re.compile(r"&amp;(#x[0-9A-Fa-f]+;)")


def _mathml(latex: str, display: bool) -> str:
    """MathML for one formula, or the escaped LaTeX in ``<code class="latex">`` if it fails.

    latex2mathml keeps symbols as ``&#x...;`` strings and its ``convert`` unescapes the whole
    output, which would turn ``\\text{<b>}`` into markup; so serialize the tree here and revive
    only those character references.
    """
    try:
        element = convert_to_element(latex, display="block" if display else "inline")
    except Exception:  # it raises many types (its own, IndexError...) on LaTeX it cannot read
        return f'<code class="latex">{escape(latex)}</code>'
    return _CHAR_REF.sub(r"&\1", tostring(element, encoding="unicode"))


_Tokens = Sequence[Token]


def _inline(self: RendererHTML, tokens: _Tokens, idx: int, opts: OptionsDict, env: EnvType) -> str:
    # $$x$$ inside a paragraph stays there as block-displayed math: a div would end the <p>.
    return _mathml(tokens[idx].content.strip(), tokens[idx].type == "math_inline_double")


def _block(self: RendererHTML, tokens: _Tokens, idx: int, opts: OptionsDict, env: EnvType) -> str:
    token = tokens[idx]
    label = f" ({escape(token.info)})" if token.type.endswith(("_label", "_eqno")) else ""
    return f'<div class="math-display">{_mathml(token.content.strip(), True)}{label}</div>\n'


def _table(self: RendererHTML, tokens: _Tokens, idx: int, opts: OptionsDict, env: EnvType) -> str:
    tag = self.renderToken(tokens, idx, opts, env)
    return '<div class="table-wrap">' + tag if tokens[idx].nesting == 1 else tag + "</div>\n"


def _cell(self: RendererHTML, tokens: _Tokens, idx: int, opts: OptionsDict, env: EnvType) -> str:
    # GFM column alignment comes as style="text-align:..", and style attributes are dropped.
    token = tokens[idx]
    style = str(token.attrs.pop("style", ""))
    if style.startswith("text-align:"):
        token.attrSet("align", style.removeprefix("text-align:"))
    return self.renderToken(tokens, idx, opts, env)


def _html_block(
    self: RendererHTML, tokens: _Tokens, idx: int, opts: OptionsDict, env: EnvType
) -> str:
    # dots.ocr tables are HTML blocks; the sanitizer mends any nesting this wrapper upsets.
    content = tokens[idx].content
    if content.lstrip()[:6].lower() == "<table":
        return f'<div class="table-wrap">{content.rstrip()}</div>\n'
    return content


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.use(dollarmath_plugin, double_inline=True, label_normalizer=str.strip)
    md.use(texmath_plugin, delimiters="brackets")  # \(...\) and \[...\]
    for name in ("math_inline", "math_inline_double"):
        md.add_render_rule(name, _inline)
    for name in ("math_block", "math_block_label", "math_block_eqno"):
        md.add_render_rule(name, _block)
    for name in ("table_open", "table_close"):
        md.add_render_rule(name, _table)
    for name in ("th_open", "td_open"):
        md.add_render_rule(name, _cell)
    md.add_render_rule("html_block", _html_block)
    return md


_MD = _parser()


def markdown_html(text: str) -> str:
    """Markdown as produced by dotsocr (see :mod:`dotsocr.render.markdown`) -> an HTML
    fragment safe to put in a web page with ``innerHTML``.

    Tables and formulas are kept (formulas as MathML, which Chromium renders natively);
    scripts, event handlers, styles, remote pictures and links other than http(s) and
    mailto are removed.

    Example:
        >>> "<msup>" in markdown_html("Area: $x^2$")
        True
    """
    if not text.strip():
        return ""
    return _CLEANER.clean(_MD.render(text))
