"""Make the attack zoo's backdoored encoders listed in encoders.json, one after the other, with
../shared/tools/badencoder_zoo.py (PyTorch: Debian's python3-torch). Idempotent: an encoder whose
ONNX file and card exist is skipped. Output goes to an ignored folder (default: runs/zoo at the
repository's root), one NAME.onnx, NAME.json (card) and NAME.log per member.

  /usr/bin/python3 testdata/zoo/make_zoo.py [--out runs/zoo] [--only z01,z07] [--shared ../shared]
"""
import argparse, json, os, subprocess, sys, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(root, "runs", "zoo"))
    ap.add_argument("--only", default="", help="comma-separated name prefixes")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(root), "shared"))
    a = ap.parse_args()
    zoo = json.load(open(os.path.join(here, "encoders.json")))
    rel = lambda p: os.path.normpath(os.path.join(here, p.replace("../../../shared", a.shared)))
    os.makedirs(a.out, exist_ok=True)
    only = [s for s in a.only.split(",") if s]
    for e in zoo["encoders"]:
        name = e["name"]
        if only and not any(name.startswith(o) for o in only):
            continue
        out = os.path.join(a.out, name)
        if os.path.exists(out + ".onnx") and os.path.exists(out + ".json"):
            print("have", name, flush=True)
            continue
        r = dict(zoo["defaults"])
        r.update({k: e[k] for k in ("shadow_n", "epochs", "l1", "l2", "lr") if k in e})
        trig = dict(e["trigger"])
        if "image" in trig:
            trig["image"] = os.path.join(here, trig["image"])
        cmd = [sys.executable, os.path.join(a.shared, "tools", "badencoder_zoo.py"),
               "--clean", rel(zoo["clean"]), "--shadow", rel(zoo["shadow"]),
               "--reference-from", rel(zoo["references"][e["downstream"]]),
               "--target", str(e["target"]), "--trigger", json.dumps(trig),
               "--shadow-n", str(r["shadow_n"]), "--epochs", str(r["epochs"]),
               "--l1", str(r["l1"]), "--l2", str(r["l2"]), "--lr", str(r["lr"]), "--out", out]
        t0 = time.time()
        print("making", name, flush=True)
        with open(out + ".log", "w") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            sys.exit(f"{name}: badencoder_zoo.py exited {rc}; see {out}.log")
        card = json.load(open(out + ".json"))
        card.update({"zoo_id": e["id"], "downstream": e["downstream"], "trigger": e["trigger"],
                     "half": "tuning" if e["id"] % 2 else "held-out", "seconds": round(time.time() - t0)})
        json.dump(card, open(out + ".json", "w"), indent=1)
        print("made", name, card["seconds"], "s", flush=True)


if __name__ == "__main__":
    main()
