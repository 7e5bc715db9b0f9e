"""No measured number is typed into a lesson's text.

A loss, an accuracy, a time, a ratio or a count read off a figure changes with
the machine, the BLAS, the thread count or a new layer, and a number typed into
the markdown then contradicts the output printed right above it.  So a lesson
either prints the sentence that states a measured number (an f-string in the
code cell), or its text says only what holds on every run and the cell checks
it with ``expect(...)`` (``tinyalexnet/exercises/claims.py``), which fails the
lesson test when the output no longer supports the text.

This test scans every markdown cell for numbers that look measured: decimals,
percentages, powers of ten, ratios ("2.4x", "five times"), durations ("85 days",
"0.4 s"), approximations ("about 350"), counts read off a figure ("three of the
eight") and fractions ("a third").  Each must be

* a number the same notebook asserts: it appears as a literal inside an
  ``expect(...)`` call of one of its code cells (the text states the threshold
  the cell checks: "the loss ends below 0.5" with ``expect(loss < 0.5, ...)``), or
* in the reviewed allow-list below: constants of the paper, exact counts and exact
  arithmetic (parameters, multiply-adds, log 10), settings the lesson chooses,
  each with the reason it may stay.

Inline code (`lr=0.001`), fenced code blocks and links are not scanned: they show
code and settings, not results.  Exercise and break-it numbers ("exercise 2.3",
"**4.1 ...**") are names, not numbers.
"""
import ast
import math
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

LESSONS_DIR = Path(__file__).resolve().parent.parent / "lessons"
LESSONS = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.ipynb"))

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "hundred": 100, "a hundred": 100, "thousand": 1000, "a thousand": 1000,
    "million": 1e6, "a million": 1e6, "half": 0.5, "a third": 1 / 3, "a quarter": 0.25}
WORD = r"(?:a hundred|a thousand|a million|one|two|three|four|five|six|seven|eight|nine|ten|" \
       r"eleven|twelve|twenty|thirty|forty|fifty|hundred|thousand|million)"
NUM = r"\d+(?:[.,]\d+)*"
PATTERNS = {
    "power of ten": NUM + r"\s?(?:e[-+−]?\d+|[·×]\s?10(?:\^\{?[-−]?\d+\}?|[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)"
                    r"|\\cdot\s?10\^\{?[-−]?\d+\}?)|10\^\{[-−]?\d+\}|10[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+",
    "decimal": r"[-−]?\d+\.\d+(?:\s?%)?",
    "percentage": r"\d+\s?%",
    "ratio": r"(?:" + NUM + r"|" + WORD + r")(?:\s?(?:x|×)(?!\s?[\d(*$\\])|[\s-]fold|\s+times)",
    "approximation": r"(?:about|around|roughly|nearly|almost|approximately|some|~|≈|\\approx)"
                     r"\s+(?:an?\s+)?\$?" + NUM,
    "duration": NUM + r"\s?(?:ms|µs|s|min)(?![\w/])|(?:" + NUM + "|" + WORD + r")\s+"
                r"(?:minutes?|seconds?|hours?|days?|weeks?|months?|years?)",
    "count of a figure": r"(?:" + NUM + "|" + WORD + r")\s+of\s+(?:the|every|its|all|these)\s+"
                         r"(?:" + NUM + "|" + WORD + r")(?![\w,])",
    "fraction": r"(?:a|one|two|three)\s+(?:third|thirds|quarter|quarters|fifth|tenth)s?"
                r"(?=\s+(?:of|or|as|less|more)\b|\s*[.,;:)!?]|\s*$)",
}
SCANNERS = {kind: re.compile(r"(?<![\w.])" + p + r"(?![\w])", re.IGNORECASE)
            for kind, p in PATTERNS.items()}

# ------------------------------------------------------------------ the reviewed allow-list
# (lesson, token) -> why the number may stay in the text.  "*" stands for every lesson.
# Every entry must still be used (test_every_allowed_number_is_used).
ALLOWED = {
    # the paper's results and facts (Krizhevsky, Sutskever, Hinton 2012)
    ("*", "15.3%"): "paper: top-5 test error of the seven-network ensemble, ILSVRC-2012",
    ("*", "26.2%"): "paper: the runner-up's top-5 error, ILSVRC-2012",
    ("*", "18.2%"): "paper: top-5 validation error of one network, ILSVRC-2012",
    ("*", "six times"): "paper, Figure 1: ReLU reached 25% training error six times faster",
    ("*", "about 1.2"): "paper: ILSVRC's training set, about 1.2 million images",
    ("*", "six days"): "paper: five to six days on two GTX 580 GPUs",
    ("*", "10^{-6}"): "the gradient check's step h, a setting of the package",
    # exact arithmetic
    ("*", "0.9"): "exact: the error of a guess among 10 classes (chance), or the paper's momentum",
    ("*", "2.30"): "log 10, exact: the loss of a uniform guess over 10 classes",
    ("*", "6.91"): "log 1000, exact: the loss of a uniform guess over 1000 classes",
    ("*", "6.9"): "log 1000, exact",
    # lesson 1
    ("01", "about 60"): "LeNet-5's size, about 60 thousand parameters (LeCun et al. 1998)",
    ("01", "10⁶"): "the definition of a megabyte",
    ("01", "about 244"): "exact: 60,965,224 float32 parameters are 243,860,896 bytes",
    ("01", "about 16"): "a property of float64: about 16 significant decimal digits",
    # lesson 2
    ("02", "37.7"): "exact: fc6's 9216 x 4096 weights, in millions",
    ("02", "1e-7"): "the course's verdict table: a threshold it chooses",
    ("02", "1e-11"): "the verdict table's rule of thumb for a smooth layer in float64",
    ("02", "about 1"): "a property of the relative error: about 1 for unrelated vectors",
    ("02", "A thousand times"): "a setting: the learning rate multiplied by 1000 (LR_FACTORS)",
    ("02", "3e-2"): "a hypothetical value in a question (check your understanding)",
    ("02", "2e-10"): "a hypothetical value in a question (check your understanding)",
    ("02", "1e-5"): "a hypothetical value in a question (check your understanding)",
    # lesson 3
    ("03", "4.4"): "exact: conv1's cols for one image, 363 x 3025 float32 values, in MB",
    ("03", "0.6"): "exact: one 3 x 227 x 227 float32 image, in MB",
    ("03", "1.7%"): "paper: the two-GPU scheme against half the kernels, top-1",
    ("03", "1.2%"): "paper: the two-GPU scheme against half the kernels, top-5",
    ("03", "61.1"): "exact: torchvision's alexnet, 61,100,840 parameters",
    # lesson 4
    ("04", "25%"): "paper, Figure 1: the training error the epochs are counted to (TARGET)",
    ("04", "about 6"): "paper, Figure 1: the ReLU network reached 25% after about 6 epochs",
    ("04", "1e-4"): "a rule of thumb for checks near a kink (the range to look again at)",
    ("04", "1e-1"): "a rule of thumb for checks near a kink (the range to look again at)",
    ("04", "0.1"): "a setting: break-it 4.1's learning rate",
    ("04", "ten times"): "a setting: break-it 4.1's learning rate, ten times lr 0.01",
    ("04", "64 times"): "exact: batch 1 makes 64 times as many steps as batch 64",
    ("04", "3e-3"): "a hypothetical value in a question (check your understanding)",
    ("04", "1e-10"): "a hypothetical value in a question (check your understanding)",
    ("04", "0.0099"): "exact: 1 - tanh(3)^2",
    ("04", "≈ 0.0099"): "exact: 1 - tanh(3)^2",
    ("04", "around 3"): "the question's hypothetical input size",
    # lesson 5
    ("*", "0.4%"): "paper: overlapping pooling lowered top-1 error by 0.4%",
    ("*", "0.3%"): "paper: overlapping pooling lowered top-5 error by 0.3%",
    ("*", "1.4%"): "paper: LRN lowered top-1 error by 1.4%",
    ("*", "1.2%"): "paper: LRN lowered top-5 error by 1.2% (and the two-GPU scheme, lesson 3)",
    ("*", "13%"): "paper: a four-layer CNN's CIFAR-10 test error without LRN",
    ("*", "11%"): "paper: the same network's CIFAR-10 test error with LRN",
    ("*", "10^{-4}"): "paper: LRN's alpha",
    ("*", "0.75"): "paper: LRN's beta",
    ("05", "1.7"): "exact: 2^0.75, the division LRN applies to small activations",
    ("05", "\\approx 1.7"): "exact: 2^0.75",
    ("05", "about $10"): "exact: alpha times the sum must reach about k, a sum of about 10^4",
    ("05", "0.25"): "the example in the standard-error formula, p = 0.25",
    ("05", "about 1.4"): "exact: sqrt(0.25 x 0.75 / 1000), the formula's example",
    ("05", "0.003"): "a setting: section 3's learning rate",
    ("05", "0.03"): "a setting: break-it 1's learning rate",
    ("05", "Ten times"): "a setting: break-it 1's learning rate, ten times section 3's",
    ("05", "2·10⁻⁵"): "exact: PyTorch's alpha 1e-4 divided by 5, in the paper's terms",
    ("05", "-0.75"): "exact: the exponent of 2^-0.75",
    ("05", "0.59"): "exact: 2^-0.75, the factor of an isolated channel",
    ("05", "\\approx 0.59"): "exact: 2^-0.75",
    ("05", "five times"): "exact: PyTorch's alpha / 5 is five times weaker",
    ("05", "5 · 10^4"): "exact arithmetic in an answer: five squares of 100",
    ("05", "1.68"): "exact: 2^0.75",
    ("05", "≈ 1.68"): "exact: 2^0.75",
    ("05", "4.3"): "exact arithmetic in an answer: 7^0.75",
    ("05", "about 4.3"): "exact arithmetic in an answer: 7^0.75",
    ("05", "about 5"): "exact arithmetic in an answer: the window sum of five squares of 100",
    ("05", "≈ 7"): "exact arithmetic in an answer: 2 + 1e-4 x 5 x 10^4",
    # lesson 6
    ("*", "0.0005"): "paper: the weight decay",
    ("*", "0.001"): "a setting: Adam's learning rate in lessons 9-11 (and Adam's beta2 = 0.999)",
    ("06", "1.2"): "paper: 1.2 million training images",
    ("06", "three times"): "a setting (three seeds), or the paper's three divisions of the learning rate",
    ("06", "5 \\cdot 10^{-6}"): "exact: the decay per step, 0.0005 x 0.01",
    ("06", "0.05"): "a setting: the strong weight decay of the experiment",
    ("06", "10^{-8}"): "Adam's constant delta (Kingma and Ba)",
    ("06", "0.999"): "Adam's constant beta2 (Kingma and Ba)",
    ("06", "0.3"): "a setting: Adam's learning rate on the valley",
    ("06", "\\approx 3"): "exact: 0.1 / sqrt(0.001), Adam's first step without bias correction",
    ("06", "17 times"): "exact: the valley's gradient at its starting point, 15 against 0.9",
    ("06", "about 17"): "exact: the valley's gradient at its starting point, 15 against 0.9",
    ("06", "0.7"): "a setting to try (dropout p)",
    ("06", "90%"): "a setting: dropout p = 0.9",
    ("06", "0.2"): "exact: the stability edge of gradient descent on the valley, 2 / 10",
    ("06", "0.21"): "a setting: break-it 5.3's learning rate",
    ("06", "0.38"): "exact: the stability edge with momentum 0.9, 2 (1 + 0.9) / 10",
    ("06", "0.4"): "a setting to try in break-it 5.3",
    ("06", "3.0"): "a hypothetical value in a question (check your understanding)",
    ("06", "6.0"): "exact arithmetic in an answer: 3.0 / (1 - 0.5)",
    ("06", "3.2"): "exact arithmetic in an answer: 0.1 / sqrt(0.001)",
    ("06", "\\approx 3.2"): "exact arithmetic in an answer: 0.1 / sqrt(0.001)",
    ("06", "20%"): "a hypothetical value in a question (check your understanding)",
    ("06", "ten times"): "exact: momentum 0.9 adds steps up to 1 / (1 - 0.9) = 10 times one step",
    # lesson 7
    ("*", "0.5"): "paper: dropout's p (or a setting the lesson states as such)",
    ("07", "54.25"): "exact: (224 - 11) / 4 + 1",
    ("07", "3025 times"): "exact: 55 x 55 output positions",
    ("07", "4%"): "exact, from the parameter counts: the convolutions' share",
    ("07", "about 4"): "exact, from the parameter counts: the convolutions' share",
    ("07", "92%"): "exact, from the multiply-add counts: the convolutions' share",
    ("07", "about 92"): "exact, from the multiply-add counts: the convolutions' share",
    ("07", "62%"): "exact, from the parameter counts: fc6's share",
    ("07", "0.7"): "exact, from the parameter count: weights, gradients and momentum in GiB",
    ("07", "About 0.7"): "exact, from the parameter count: weights, gradients and momentum in GiB",
    ("07", "1.8"): "exact, from the layer shapes: outputs and gradients of a batch of 128 in GiB",
    ("07", "about 1.8"): "exact, from the layer shapes: outputs and gradients of a batch of 128 in GiB",
    ("07", "2.5"): "exact: the sum of the two above",
    ("07", "some 2.5"): "exact: the sum of the two above",
    ("07", "roughly 1"): "exact: roughly 1/1000, the probability of a uniform guess",
    ("07", "54 times"): "exact: conv1 fits 54 times on a 224 input",
    ("07", "37.7"): "exact: fc6's parameters in millions",
    ("07", "26.2"): "exact: fc6's parameters in millions for a 224 input",
    # lesson 8
    ("08", "about 3"): "the size of the repository's data/fashion-mnist-subset files, in MB",
    ("08", "0.1"): "paper: the standard deviation of the lighting noise's alpha",
    ("08", "1%"): "paper: PCA lighting cut top-1 error by over 1%",
    ("08", "255 times"): "exact: a variance scales with the square of the pixel scale",
    ("08", "thirty times"): "a setting: sigma 3 for the eye, thirty times the paper's",
    ("08", "A quarter"): "exact: uint8 is a quarter of float32's bytes",
    ("08", "a quarter"): "exact: uint8 is a quarter of float32's bytes",
    # lesson 9
    ("*", "0.01"): "paper: the initial learning rate and the weights' standard deviation",
    ("*", "\\approx 2.30"): "log 10, exact",
    ("*", "\\approx 6.91"): "log 1000, exact",
    ("*", "37.5%"): "paper: top-1 test error of one network, ILSVRC-2010",
    ("*", "17.0%"): "paper: top-5 test error of one network, ILSVRC-2010",
    ("09", "2.303"): "log 10, exact",
    ("09", "\\approx 2.303"): "log 10, exact",
    ("09", "50%"): "exact: top-5 of 10 classes by chance",
    ("09", "99.5%"): "exact: top-5 error of a guess among 1000 classes",
    ("09", "three times"): "paper: the learning rate was divided by 10 three times",
    ("09", "0.09"): "exact: sqrt(2 / 256), He's standard deviation for fc8",
    ("09", "\\approx 0.09"): "exact: sqrt(2 / 256)",
    ("09", "30 times"): "a setting to try (LR_FACTORS)",
    # lesson 10
    ("10", "four times"): "exact: a float32 pixel has four times the bytes of a uint8 one",
    ("10", "4.5"): "exact: alexnet32's parameters in millions",
    ("10", "two days"): "exact: the paper's FLOPs at two GTX 580s' peak (printed by the cell)",
    ("10", "a third"): "exact: the days at peak against the paper's five to six",
    ("10", "1e-4"): "the check command's bound, a setting of the package",
    ("10", "1e-3"): "the check command's bound for gradients, a setting of the package",
    ("10", "1e-12"): "a hypothetical in a question: an exact agreement",
    ("10", "1e-6"): "float32's rounding, about its machine epsilon",
    ("10", "1e-2"): "the size of a real mistake's effect, in an answer",
    ("10", "0.3"): "a hypothetical value in a question (check your understanding)",
    ("10", "0.3 ms"): "a hypothetical value in a question (check your understanding)",
    ("10", "about 7"): "a property of float32: about 7 significant digits",
    ("10", "8 minutes"): "a setting: the GPU script's budget",
    ("10", "a quarter"): "exact: uint8 is a quarter of float32's bytes",
    # lesson 11
    ("11", "1.2"): "paper: 1.2 million training images",
    ("11", "a third"): "a threshold the cell counts against (printed)",
    ("11", "a quarter"): "exact: a 16 x 16 square is a quarter of a 32 x 32 input",
    ("11", "16 of the 32"): "exact: conv2's groups=2 halves conv1's 32 channels",
    # lesson 12
    ("12", "ten times"): "a setting: fc8's weights scaled by 10",
    ("12", "10^{-3}"): "a rule of thumb from practice for the update-to-weight ratio",
    ("12", "around $10"): "a rule of thumb from practice for the update-to-weight ratio",
    ("12", "10 times"): "exact: momentum 0.9 adds steps up to 10 times one step",
    ("12", "a tenth"): "exact: a ratio of 10^-1, or momentum's largest step against one",
    ("12", "10^{-5}"): "a setting: the range test's lowest learning rate",
    # lesson 13
    ("13", "46%"): "exact, from the multiply-add counts: conv3-5's share of AlexNet's",
    ("13", "about 46"): "exact, from the multiply-add counts",
    ("13", "42%"): "exact, from the multiply-add counts: conv3-5's share of alexnet32's",
    ("13", "2.25"): "exact: 36 multiplications against 16 per 2 x 2 tile",
    ("13", "2.25 ×"): "exact: 36 multiplications against 16 per 2 x 2 tile",
    ("13", "one of the 16"): "exact: the 16 positions of a 4 x 4 tile",
    ("13", "16%"): "exact: 196 outputs computed for 169 kept",
    ("13", "44%"): "exact: 36 outputs computed for 25 kept",
    ("13", "6e-8"): "exact: float32's unit roundoff, 2^-24",
    ("13", "4 ×"): "exact: 144 multiplications against 36",
    ("13", "14%"): "exact: 27 of 196 outputs cut off",
}


def _strip_code(text):
    """Markdown without fenced code, inline code, links' targets and HTML tags."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"https?://\S+", " ", text)
    return re.sub(r"<[^>]+>", " ", text)


def _names(nb):
    """Exercise and break-it numbers of a notebook: names, not measurements."""
    names = {str(c.metadata.get("tinyalexnet", {}).get("exercise")) for c in nb.cells}
    for c in nb.cells:
        if c.cell_type == "markdown":
            names |= set(re.findall(r"\*\*(\d+\.\d+)\s", c.source))
            names |= set(re.findall(r"(?:xercises?|reak[- ]it|[Ss]ection)\s+(\d+\.\d+)",
                                    c.source))
    return names


SUPERSCRIPTS = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")


def _value(token):
    """The number a token states (a percentage counts as itself and as a fraction)."""
    t = token.lower().replace("−", "-").replace("\\cdot", "·").replace(",", "")
    t = t.translate(SUPERSCRIPTS)
    m = re.search(r"(\d+(?:\.\d+)?)?\s?(?:e([-+]?\d+)|·?\s?10\^?\{?(-?\d+)\}?)", t)
    if m and (m.group(2) or m.group(3)):
        return {float(m.group(1) or 1) * 10 ** int(m.group(2) or m.group(3))}
    m = re.search(r"\d+(?:\.\d+)?", t)
    if m:
        v = float(m.group(0))
        return {v, v / 100} if "%" in t else {v}
    return {float(v) for word, v in NUMBER_WORDS.items() if re.search(rf"\b{word}\b", t)}


def _expected_literals(nb):
    """Every number written inside an ``expect(...)`` call of the notebook's code."""
    found = set()
    for c in nb.cells:
        if c.cell_type != "code" or "expect(" not in c.source:
            continue
        source = "\n".join(line for line in c.source.splitlines()
                           if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "expect":
                # indices (losses[-1]) are positions, not the numbers a claim states
                indices = {id(n) for sub in ast.walk(node) if isinstance(sub, ast.Subscript)
                           for n in ast.walk(sub.slice)}
                for arg in ast.walk(node.args[0]):
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, (int, float)) \
                            and not isinstance(arg.value, bool) and id(arg) not in indices:
                        found.add(float(arg.value))
                        if isinstance(arg.value, float):       # an unary minus: -0.5
                            found.add(-float(arg.value))
    return found


def measured_looking(nb):
    """``[(cell index, kind, token)]`` for every number of the markdown that looks measured."""
    found = []
    names = _names(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        text = _strip_code(cell.source)
        for kind, scanner in SCANNERS.items():       # each kind on its own: they may overlap
            for m in scanner.finditer(text):
                token = m.group(0).strip()
                if kind == "decimal" and token in names:
                    continue
                found.append((index, kind, token))
    return found


def _allowed(lesson, token):
    return ALLOWED.get((lesson, token)) or ALLOWED.get(("*", token))


def unexplained(path):
    nb = nbformat.read(path, as_version=4)
    lesson = path.name[:2]
    asserted = _expected_literals(nb)
    bad = []
    for index, kind, token in measured_looking(nb):
        if _allowed(lesson, token):
            continue
        if any(math.isclose(v, a, rel_tol=1e-9) for v in _value(token) for a in asserted):
            continue
        bad.append(f"cell {index}: {kind} {token!r}")
    return bad


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_no_measured_number_is_typed_into_the_text(path):
    bad = unexplained(path)
    assert not bad, (f"{path.name}: numbers in the markdown that look measured; print them from "
                     "the cell (an f-string), or state what holds on every run and assert it "
                     "with expect(...), or, for a constant of the paper or an exact count, add "
                     "it to ALLOWED with the reason:\n  " + "\n  ".join(bad))


def test_every_allowed_number_is_used_and_has_a_reason():
    used = set()
    for path in LESSONS:
        nb = nbformat.read(path, as_version=4)
        for _, _, token in measured_looking(nb):
            for key in ((path.name[:2], token), ("*", token)):
                if key in ALLOWED:
                    used.add(key)
    assert set(ALLOWED) == used, f"allow-list entries no lesson uses: {sorted(set(ALLOWED) - used)}"
    assert all(isinstance(why, str) and len(why) > 10 for why in ALLOWED.values())


# ------------------------------------------------------------------ the scanner itself
@pytest.mark.parametrize("text, token", [
    ("the validation loss rises from 0.460 to 0.463", "0.460"),
    ("images/s fell only 1.5- to 1.6-fold", "1.6-fold"),
    ("rises to about 9, and", "about 9"),
    ("about 350 images/s", "about 350"),
    ("the paper's 90 epochs would take about 120 days", "120 days"),
    ("some four months for the paper's training", "four months"),
    ("about 0.4 s for the 4 images", "0.4 s"),
    ("1.3x faster", "1.3x"),
    ("five times fewer", "five times"),
    ("the true class is second in three of the eight", "three of the eight"),
    ("seven of eight fall to a third or less", "a third"),
    ("its error stays above 80%", "80%"),
    ("the error bottoms out near $h \\approx 3 \\cdot 10^{-5}$", "3 \\cdot 10^{-5}"),
    ("the error bottoms out near $h \\approx 3 \\cdot 10^{-5}$", "\\approx 3"),
    ("a relative error of 2e-11", "2e-11"),
])
def test_the_scanner_sees_measured_numbers(text, token):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])
    assert token in [t for _, _, t in measured_looking(nb)], measured_looking(nb)


@pytest.mark.parametrize("text", [
    "a batch of 3 × 227 × 227 images", "exercise 2.3 asks for the loss", "**4.1 A larger rate**",
    "set `lr=0.001` and run", "see [the docs](https://example.org/v1.2)", "conv1 has 96 kernels",
    "```python\nx = 0.5\n```",
])
def test_the_scanner_leaves_names_sizes_and_code_alone(text):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])
    assert measured_looking(nb) == []


def test_a_number_the_notebook_asserts_may_stand_in_the_text(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("The loss ends below 0.47, the error below 23%."),
        nbformat.v4.new_code_cell("%matplotlib inline\nexpect(loss < 0.47 and err < 0.23, 'x')")])
    path = tmp_path / "99_test.ipynb"
    nbformat.write(nb, path)
    assert unexplained(path) == []
    nb.cells[1].source = "print(loss)"
    nbformat.write(nb, path)
    assert len(unexplained(path)) == 2
