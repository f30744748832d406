"""Synthetic stand-ins for the three upstream datasets, in their upstream file formats.

Nothing here comes from the real data: fictional companies, people and sums,
generated from templates with a fixed seed. ``write_mirror(dir)`` lays the files
out like the real mirror (``financial-qa-10k/``, ``cmrc2018/``, ``gsm8k/``, and a
user's own ``documents/``: Markdown, HTML, text, one Chinese); the
offline demo runs on the copy committed under ``data/demo-mirror`` (a test checks
that it is exactly what this module generates).

    python tests/synthetic.py data/demo-mirror
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from pathlib import Path

COMPANIES = [
    ("Aurora Widgets", "AURW"), ("Bluefin Logistics", "BFLG"), ("Cedar Health", "CDRH"),
    ("Delta Pumps", "DLTP"), ("Ember Foods", "EMBF"), ("Fjord Shipping", "FJRD"),
    ("Granite Cloud", "GRCL"), ("Harbor Retail", "HRBR"), ("Ionic Batteries", "IONB"),
    ("Juniper Textiles", "JNPT"), ("Kestrel Airlines", "KSTL"), ("Lumen Optics", "LMNO"),
    ("Mosaic Games", "MSCG"), ("Nimbus Insurance", "NMBS"), ("Orchid Pharma", "ORCP"),
    ("Pioneer Rail", "PNRL"), ("Quartz Semiconductors", "QRTZ"), ("Redwood Paper", "RDWP"),
    ("Sable Mining", "SBLM"), ("Tidewater Energy", "TDWE"), ("Umber Ceramics", "UMBC"),
    ("Vantage Robotics", "VNTR"), ("Willow Banking", "WLWB"), ("Xenon Lighting", "XNLT"),
    ("Yarrow Media", "YRWM"), ("Zephyr Motors", "ZPHM"),
]

# (question, passage) templates; {c} company, {a} {b} digits, {y} year. The questions paraphrase
# the passages (top line ~ revenue, workforce ~ employed), so an untuned embedder often picks
# the right company but the wrong fact: there is something for fine-tuning to learn.
FACTS = [
    ("What was {c}'s top line in fiscal {y}?",
     "{c} reported total revenue of ${a}.{b} billion for fiscal {y}, driven by higher unit volumes."),
    ("How large was {c}'s workforce at the close of {y}?",
     "As of December 31, {y}, {c} employed approximately {a},{b}00 people across its operations."),
    ("Which supply-chain vulnerability does {c} flag?",
     "{c} depends on a small number of vendors for key components, and any disruption could delay shipments."),
    ("What did {c} invest in innovation during {y}?",
     "Research and development expenses at {c} were ${a}{b} million in {y}, reflecting new product programs."),
    ("How much did {c} pay its owners each quarter in {y}?",
     "In {y}, the board of {c} declared a quarterly cash dividend of ${a}.{b}0 per share."),
    ("Where does {c} run its main offices from?",
     "{c} maintains its corporate headquarters in a leased campus of {a}{b},000 square feet."),
    ("Who does {c} contend with for customers?",
     "{c} faces intense competition from larger firms with greater resources and broader distribution networks."),
    ("How profitable was {c} in {y}?",
     "Net income for {c} totaled ${a}{b}.{a} million in {y}, compared with a loss in the prior year."),
    ("What borrowings did {c} have outstanding at the end of {y}?",
     "At year-end {y}, {c} carried long-term debt of ${a}.{b} billion, mostly fixed-rate senior notes."),
    ("Did {c} buy back any of its stock in {y}?",
     "During {y}, {c} repurchased {a}.{b} million shares of its common stock under its authorized program."),
]

# CMRC-style Chinese reading comprehension: (passage template, [(question, answer template)])
PEOPLE = ["林晓", "王磊", "陈静", "赵敏", "周航", "吴桐", "郑岚", "孙越", "钱程", "何畅", "高远", "罗霞"]
CITIES = ["苏州", "成都", "青岛", "昆明", "厦门", "长沙", "西安", "大连"]
JOBS = ["建筑师", "画家", "工程师", "医生", "作家", "音乐家"]
WORKS = ["《远山》", "《海潮》", "《春夜》", "《归途》", "《晨光》", "《长河》"]


def financial_rows(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for company, ticker in COMPANIES:
        for q, p in FACTS:
            # Yearly facts appear for two years: passages that differ only in the year and the
            # figures are what an untuned embedder confuses most.
            for y in ([2022, 2023] if "{y}" in q else [rng.choice([2022, 2023])]):
                a, b = rng.randint(1, 9), rng.randint(1, 9)
                rows.append({
                    "question": q.format(c=company, y=y),
                    "answer": p.format(c=company, y=y, a=a, b=b).split(",")[0] + ".",
                    "context": p.format(c=company, y=y, a=a, b=b),
                    "ticker": ticker,
                    "filing": f"{y}_10K",
                })
    rng.shuffle(rows)
    # Quirks of the real file, so that the demo exercises input validation:
    rows[3]["context"] = ""                          # an empty passage
    rows[7]["question"] = ""                         # an empty query
    rows[11]["context"] = rows[12]["context"]        # a passage shared by two questions
    return rows


def cmrc_doc(rng: random.Random, n_paragraphs: int, prefix: str) -> dict:
    paragraphs = []
    for i in range(n_paragraphs):
        name, city, job, work = rng.choice(PEOPLE), rng.choice(CITIES), rng.choice(JOBS), rng.choice(WORKS)
        year = rng.randint(1950, 1999)
        count = rng.randint(2, 9)
        context = (f"{name}是一位来自{city}的{job}，出生于{year}年。{name}最著名的作品是{work}，"
                   f"这部作品获得了{count}项奖项。后来{name}移居{rng.choice(CITIES)}，继续从事创作。")
        qas = [(f"{name}出生于哪一年？", f"{year}年"), (f"{name}最著名的作品是什么？", work),
               (f"{name}来自哪里？", city), ("这部作品获得了几项奖项？", f"{count}项奖项")]
        paragraphs.append({
            "id": f"{prefix}_{i}",
            "context": context,
            "qas": [{"question": q, "id": f"{prefix}_{i}_QUERY_{j}",
                     "answers": [{"text": a, "answer_start": context.find(a)}] * 3}
                    for j, (q, a) in enumerate(qas)],
        })
    return {"version": "v1.0", "data": [{"paragraphs": paragraphs, "id": prefix, "title": "synthetic"}]}


def gsm8k_rows(rng: random.Random, n: int) -> list[dict[str, str]]:
    rows = []
    for _ in range(n):
        name = rng.choice(["Ava", "Ben", "Cleo", "Dev", "Eli", "Fay"])
        a, b, price = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9)
        total = (a + b) * price
        rows.append({
            "question": f"{name} picks {a} apples in the morning and {b} apples in the afternoon. "
                        f"Each apple sells for ${price}. How much money does {name} make?",
            "answer": f"{name} picks {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n"
                      f"{name} makes {a + b} * {price} = <<{a + b}*{price}={total}>>{total} dollars.\n#### {total}",
        })
    return rows


def document_files(rng: random.Random) -> dict[str, str]:
    """A user's own documents (the own-documents path): two annual-report excerpts in Markdown and HTML, a text
    note, and a Chinese text file, each a few paragraphs of the facts above (fictional)."""
    def paragraphs(company: str, year: int) -> list[str]:
        return [p.format(c=company, y=year, a=rng.randint(1, 9), b=rng.randint(1, 9)) + " " +
                p.format(c=company, y=year - 1, a=rng.randint(1, 9), b=rng.randint(1, 9)) for _, p in FACTS]

    zephyr = paragraphs("Zephyr Motors", 2023)
    harbor = paragraphs("Harbor Retail", 2023)
    lumen = paragraphs("Lumen Optics", 2022)
    files = {
        "documents/zephyr-motors-2023.md": "# Zephyr Motors annual report 2023\n\n## Results\n\n" + "\n\n".join(zephyr[:5])
        + "\n\n## Risks\n\n" + "\n\n".join(f"- {p}" for p in zephyr[5:]) + "\n",
        "documents/harbor-retail-2023.html": "<html><head><title>Harbor Retail 2023</title><script>var x = 1;</script>"
        "</head><body><h1>Harbor Retail: fiscal 2023</h1>" + "".join(f"<p>{p}</p>" for p in harbor) + "</body></html>\n",
        "documents/lumen-optics-2022.txt": "Lumen Optics, notes to the 2022 report\n\n" + "\n\n".join(lumen) + "\n",
    }
    people = []
    for name in rng.sample(PEOPLE, 6):
        city, job, work, year = rng.choice(CITIES), rng.choice(JOBS), rng.choice(WORKS), rng.randint(1950, 1999)
        people.append(f"{name}是一位来自{city}的{job}，出生于{year}年。{name}最著名的作品是{work}，这部作品获得了"
                      f"{rng.randint(2, 9)}项奖项！后来{name}移居{rng.choice(CITIES)}，继续从事创作。")
    files["documents/人物介绍.txt"] = "\n\n".join(people) + "\n"
    return files


def mirror_files(seed: int = 7) -> dict[str, str]:
    """Relative path -> file content of a complete synthetic mirror."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["question", "answer", "context", "ticker", "filing"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(financial_rows(rng))
    files = {"financial-qa-10k/Financial-QA-10k.csv": out.getvalue()}
    for split, n in [("train", 12), ("dev", 6), ("test", 4)]:
        doc = cmrc_doc(rng, n, split.upper())
        files[f"cmrc2018/cmrc2018_{split}.json"] = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    for split, n in [("train", 40), ("test", 10)]:
        files[f"gsm8k/{split}.jsonl"] = "".join(json.dumps(r) + "\n" for r in gsm8k_rows(rng, n))
    # the mirror-only half of the trial set (its own generator: the files above stay as they were)
    trial = cmrc_doc(random.Random(seed + 1), 4, "TRIAL")
    files["cmrc2018/cmrc2018_trial_a.json"] = json.dumps(trial, ensure_ascii=False, indent=1) + "\n"
    files.update(document_files(random.Random(seed + 2)))  # a user's own documents (their own generator too)
    return files


def write_mirror(root: str | Path, seed: int = 7) -> Path:
    root = Path(root)
    for rel, text in mirror_files(seed).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


if __name__ == "__main__":
    print(write_mirror(sys.argv[1] if len(sys.argv) > 1 else "data/demo-mirror"))
