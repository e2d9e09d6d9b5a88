"""ragfocus.explain on the real default model: the heat map's numbers, the HTML report as a real
headless Chromium renders it (selenium + Debian's chromium and chromium-driver, installed by
scripts/setup.sh), the terminal view, the batch summary page and the commands."""

from __future__ import annotations

import io
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragfocus import Focuser, LoadedModel, Passage
from ragfocus.cli import main
from ragfocus.explain import BatchFileError, Explanation, batch_row, explain, read_batch, render_html, token_attention
from ragfocus.passage_files import PassageFileError, read_passages

QUERY = "Who built the Eiffel Tower?"
PASSAGES = [
    Passage("The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed and built by the company "
            "of Gustave Eiffel from 1887 to 1889.", id="eiffel", metadata={"source": "encyclopedia"}),
    Passage("Big Ben is the nickname for the Great Bell of the clock at the north end of the Palace of Westminster."),
    Passage("   "),
    Passage("Gustave Eiffel was a French civil engineer. His company also built the frame of the Statue of Liberty.",
            id="gustave"),
]
SCRIPT = "<script>document.title='pwned'</script>"
IMAGE = "<img src=x onerror=\"document.title='pwned';window.pwned=1\">"


@pytest.fixture(scope="module")
def focuser(default_model: LoadedModel) -> Focuser:
    """The default model and profiles, without the distraction pass (one pass fewer)."""
    return Focuser(default_model, distraction=False)


@pytest.fixture(scope="module")
def explanation(focuser: Focuser) -> Explanation:
    return explain(focuser, QUERY, PASSAGES, budget=70)


@pytest.fixture(scope="module")
def hostile(focuser: Focuser) -> Explanation:
    """Markup in the query, a passage, an id and metadata; sentence pruning on."""
    passages = [
        Passage(f"The Eiffel Tower was built by Gustave Eiffel. {SCRIPT} It opened in 1889. {IMAGE}",
                id=f"tower{IMAGE}", metadata={"note": SCRIPT}),
        Passage("Big Ben is a bell in London. It rings every hour."),
    ]
    return explain(focuser, f"Who built the tower? {SCRIPT}", passages, budget=30, granularity="sentence")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium driven by selenium through the system's chromedriver (no download)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("no chromium/chromedriver on PATH: scripts/setup.sh installs Debian's chromium and "
                    "chromium-driver when apt-get is usable (root or passwordless sudo)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1600"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser: object, html: str, path: Path) -> None:
    path.write_text(html, encoding="utf-8")
    browser.get(path.resolve().as_uri())  # type: ignore[attr-defined]
    assert browser.execute_script("return document.readyState") == "complete"  # type: ignore[attr-defined]


def _alpha(colour: str) -> float:
    """The alpha of a computed CSS colour: ``rgb(r, g, b)`` or ``rgba(r, g, b, a)``."""
    parts = colour[colour.index("(") + 1 : colour.index(")")].split(",")
    return float(parts[3]) if len(parts) == 4 else 1.0


def test_heat_map_is_the_attention_the_ranking_reads(focuser: Focuser, explanation: Explanation) -> None:
    heat = explanation.attention
    assert heat.note is None and set(heat.passages) == {0, 1, 3}  # the empty passage is never shown to the model
    assert heat.heads == sum(len(heads) for heads in focuser.heads.values())
    for index, passage_heat in heat.passages.items():
        text = PASSAGES[index].text
        ends = [0] + [token.end for token in passage_heat.tokens]
        assert all(token.start >= end and token.end > token.start for token, end in zip(passage_heat.tokens, ends))
        covered = {i for token in passage_heat.tokens for i in range(token.start, token.end)}
        assert {i for i, char in enumerate(text) if not char.isspace()} <= covered
        # The passage's retrieval-heads signal is the mean of its tokens' calibrated attention, sinks left out.
        values = [token.value for token in passage_heat.tokens if not math.isnan(token.value)]
        scored = next(p for p in explanation.result.kept + explanation.result.dropped if p.index == index)
        assert math.isclose(sum(values) / len(values), scored.signals["retrieval_heads"], rel_tol=1e-3, abs_tol=1e-6)


def test_report_renders_in_chromium(browser: object, explanation: Explanation, tmp_path: Path) -> None:
    from matplotlib.image import imread
    from selenium.webdriver.common.by import By

    result = explanation.result
    _open(browser, explanation.to_html(), tmp_path / "report.html")
    assert browser.title == f"ragfocus explain: {QUERY}"
    position = {p.index: number for number, p in enumerate(result.kept, start=1)}
    for index, passage in enumerate(PASSAGES):
        article = browser.find_element(By.ID, f"passage-{index}")
        assert article.is_displayed()
        badge = article.find_element(By.CLASS_NAME, "badge").text
        assert badge == (f"kept #{position[index]} in context" if index in position else
                         "dropped (empty)" if not passage.text.strip() else "dropped")
        if passage.text.strip():  # the rendered text of the heat map is the passage's text
            assert article.find_element(By.CLASS_NAME, "text").text == passage.text
    kept = [int(li.get_attribute("data-index")) for li in browser.find_elements(By.CSS_SELECTOR, "#kept-order li")]
    dropped = [int(li.get_attribute("data-index")) for li in browser.find_elements(By.CSS_SELECTOR, "#dropped-order li")]
    assert kept == [p.index for p in result.kept] and dropped == [p.index for p in result.dropped]
    assert set(kept) == {0, 3} and 2 in dropped

    # Every passage the model read has tokens painted with a visible, varying background.
    for index in explanation.attention.passages:
        painted = browser.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => "
            "[getComputedStyle(e).backgroundColor, e.getBoundingClientRect().width])", f"#passage-{index} .tok")
        coloured = {colour for colour, width in painted if _alpha(colour) > 0.05 and width > 0}
        assert len(coloured) >= 3, (index, painted[:5])
    # Nothing was fetched and nothing runs: one self-contained page.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert browser.find_elements(By.TAG_NAME, "script") == []

    # The pixels: the heat map's orange is on screen, and absent from the same report without attention.
    def warm_pixels(html: str, name: str) -> int:
        _open(browser, html, tmp_path / name)
        pixels = imread(io.BytesIO(browser.get_screenshot_as_png()))[..., :3] * 255
        red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        return int(((red > green + 40) & (green > blue + 30)).sum())

    assert warm_pixels(explanation.to_html(), "heat.html") > 200
    assert warm_pixels(result.to_html(), "plain.html") == 0


def test_markup_in_the_data_renders_as_text_and_runs_nothing(browser: object, hostile: Explanation, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, hostile.to_html(), tmp_path / "hostile.html")
    assert browser.title == f"ragfocus explain: Who built the tower? {SCRIPT}"
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.find_elements(By.TAG_NAME, "script") == [] and browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.execute_script("return document.querySelectorAll('[onerror]').length") == 0
    assert browser.find_element(By.ID, "query").text == f"Who built the tower? {SCRIPT}"
    article = browser.find_element(By.ID, "passage-0")
    shown = article.find_element(By.CLASS_NAME, "text").text
    assert SCRIPT in shown and IMAGE in shown
    assert article.find_element(By.CLASS_NAME, "passage-id").text == f"tower{IMAGE}"
    assert SCRIPT in article.find_element(By.CLASS_NAME, "metadata").get_attribute("textContent")
    # Sentence granularity: each sentence is listed, scored and marked kept or dropped.
    states = [li.get_attribute("class") for li in article.find_elements(By.CSS_SELECTOR, "ol.sentences li")]
    assert len(states) == len(hostile.attention.passages[0].sentences) >= 3
    assert set(states) <= {"kept", "dropped"}


def test_report_without_heat_map_says_so(focuser: Focuser, explanation: Explanation) -> None:
    plain = explanation.result.to_html()
    assert 'id="heat-note"' in plain and 'class="tok' not in plain and "<script" not in plain
    long = token_attention(focuser, QUERY, ["word " * 9000])  # tokenized, never run
    assert long.passages == {} and "8192" in (long.note or "")
    assert long.note in render_html(explanation.result, long)


def test_terminal_view(explanation: Explanation) -> None:
    shown = str(explanation.result.explain())
    assert "kept #1" in shown and "kept #2" in shown and shown.count("dropped") == 2
    for name in explanation.result.kept[0].signals:
        assert name in shown
    assert f"tokens {explanation.result.tokens_in} -> {explanation.result.tokens_out} (budget 70" in shown
    assert str(explanation.terminal()) == shown


def test_focus_command_prints_the_context_and_shows_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "passages.json"
    source.write_text(json.dumps({"passages": [{"text": p.text, "id": p.id} for p in PASSAGES]}))
    assert main(["focus", QUERY, "--passages", str(source), "--budget", "70", "--show", "--no-distraction"]) == 0
    captured = capsys.readouterr()
    assert "Gustave Eiffel" in captured.out and "Big Ben" not in captured.out
    assert "kept #1" in captured.err and "retrieval_heads" in captured.err


def test_explain_command_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "passages.txt"
    source.write_text("\n\n".join(p.text for p in PASSAGES if p.text.strip()) + "\n")
    target = tmp_path / "why.html"
    assert main(["explain", QUERY, "--passages", str(source), "-o", str(target), "--no-distraction",
                 "--ratio", "0.6", "--order", "original"]) == 0
    page = target.read_text()
    assert f"wrote {target}" in capsys.readouterr().out
    assert all(f'id="passage-{index}"' in page for index in range(3)) and 'class="tok"' in page


def test_batch_summary_page(browser: object, explanation: Explanation, hostile: Explanation, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    from selenium.webdriver.common.by import By

    source = tmp_path / "batch.jsonl"
    rows = [batch_row(explanation.result, "eiffel"), batch_row(hostile.result, "hostile")]
    source.write_text("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
    assert [row.id for row in read_batch(source)] == ["eiffel", "hostile"]
    target = tmp_path / "summary.html"
    assert main(["explain", "--batch", str(source), "-o", str(target)]) == 0
    _open(browser, target.read_text(), tmp_path / "summary-view.html")
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.closest('figure').id, i.src.slice(0, 22), i.naturalWidth])")
    assert [figure for figure, _, _ in images] == ["figure-tokens", "figure-scores", "figure-positions", "figure-signals"]
    assert all(src == "data:image/png;base64," and width > 300 for _, src, width in images)
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert SCRIPT in browser.find_element(By.ID, "rows").text  # the hostile query, as text

    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(rows[0]) + "\n" + json.dumps({k: v for k, v in rows[1].items() if k != "kept"}) + "\n")
    with pytest.raises(BatchFileError, match="line 2: missing field 'kept'"):
        read_batch(broken)


def test_read_passages_formats(tmp_path: Path) -> None:
    lines = tmp_path / "p.jsonl"
    lines.write_text('"plain text"\n\n{"page_content": "doc", "id": 7, "metadata": {"a": 1}, "score": 0.5}\n')
    assert [(p.text, p.id, dict(p.metadata), p.score) for p in read_passages(lines)] == [
        ("plain text", None, {}, None), ("doc", "7", {"a": 1}, 0.5)]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 1}]')
    with pytest.raises(PassageFileError, match="item 0: needs a 'text' string"):
        read_passages(bad)
