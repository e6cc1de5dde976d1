"""The architecture zoo's table from a bench folder (tcore bench --config testdata/bench/archzoo.json):
per member, its card (architecture, layout, size, normalisation, batch) and per scenario none / tcore
ACC (and ASR), the scan's best z and its collapse, channels masked and the time ratio tcore / none (each cell's
report.json). Markdown on stdout.

  python3 testdata/archzoo/table.py [--bench runs/bench-archzoo] [--zoo runs/archzoo] [--config testdata/bench/archzoo.json]
"""
import argparse, glob, json, os

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))


def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def pct(v):
    return "—" if v is None else f"{100 * v:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join(root, "runs", "bench-archzoo"))
    ap.add_argument("--zoo", default=os.path.join(root, "runs", "archzoo"))
    ap.add_argument("--config", default=os.path.join(root, "testdata", "bench", "archzoo.json"))
    a = ap.parse_args()
    # A cell is a scenario id, with "-RATE" when the scenario poisons at rates.
    encoder_of = {sc["id"]: sc["encoder"] for sc in (load(a.config) or {}).get("scenarios", [])}
    print("| scenario | architecture | layout | px | normalisation | batch | none ACC / ASR | tcore ACC / ASR | scan z / collapse | masked | none s | tcore s | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    cells = sorted(d for d in glob.glob(os.path.join(a.bench, "*")) if os.path.isdir(d))
    for cell in cells:
        name = os.path.basename(cell)
        member = encoder_of.get(name) or encoder_of.get(name.rsplit("-", 1)[0], "")
        card = load(os.path.join(a.zoo, member + ".json")) or {}
        none = load(os.path.join(cell, "none", "seed-1", "report.json"))
        tc = load(os.path.join(cell, "tcore", "seed-1", "report.json"))
        if none is None and tc is None:
            continue
        z, masked, ratio = "—", "—", "—"
        if tc is not None:
            scan = tc.get("encoder_scan") or {}
            z = f"{scan.get('best_z', 0):.1f} / {scan.get('best_collapse', 0):.2f}" + (" **backdoored**" if scan.get("backdoored") else "")
            masked = str((tc.get("channels") or {}).get("filtered", 0))
        if none and tc:
            ratio = f"{tc['seconds'] / none['seconds']:.1f}x"
        ext = " + ext. data" if card.get("external_data") else ""
        print(f"| {name} | {card.get('architecture', '?')} | {card.get('layout', '?')} | {card.get('size', '?')} | "
              f"{card.get('normalisation', '?')} | {card.get('batch', '?')}{ext} | "
              f"{pct(none and none.get('acc'))} / {pct(none and none.get('asr'))} | "
              f"{pct(tc and tc.get('acc'))} / {pct(tc and tc.get('asr'))} | {z} | {masked} | "
              f"{none['seconds']:.0f} | {tc['seconds']:.0f} | {ratio} |" if none and tc else
              f"| {name} | {card.get('architecture', '?')} | ... | unfinished |")


if __name__ == "__main__":
    main()
