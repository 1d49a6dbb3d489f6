"""Build the legacy checkpoints the layout test loads (run once with the code before the package move)."""
import numpy as np, torch
from setenc.encoder import SetEncoder
from setenc.heads import create_head
torch.manual_seed(0)
rng = np.random.default_rng(0)
sets = [rng.standard_normal((n, 8)).astype(np.float32) for n in (1, 3, 2, 4)]
views = [["front"], ["front", "back", "side"], ["back", "x"], ["side", "front", "back", "front"]]
titles = rng.standard_normal((4, 5)).astype(np.float32); titles[1] = 0
spec = {"name": "fake", "kwargs": {}, "id": "fake:v1"}
out = {}
def randomise(h):
    with torch.no_grad():
        for p in h.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return h
# proj + class block + mean blend
h = randomise(create_head("proj", 8, mean_weight=0.5, classes=["a", "b", "c"]))
with torch.no_grad():
    h.class_block.probe.weight.normal_(); h.class_block.probe.bias.normal_()
SetEncoder(h.eval(), spec, 8, {"note": "legacy"}, {"catalog": "x"}).save("tests/data/legacy/proj-classes.pt")
out["proj-classes"] = SetEncoder.from_pretrained("tests/data/legacy/proj-classes.pt").encode_sets(sets)
# view-aware pma
h = randomise(create_head("pma", 8, views=["front", "back", "side"], num_heads=2, encoder="sab", layers=1))
SetEncoder(h.eval(), spec, 8).save("tests/data/legacy/pma-views.pt")
out["pma-views"] = SetEncoder.from_pretrained("tests/data/legacy/pma-views.pt").encode_sets(sets, views=views)
# learned fusion deepsets
h = randomise(create_head("deepsets", 8, titles=5, skip=True))
SetEncoder(h.eval(), spec, 8, text={"name": "tfidf", "dim": 5}).save("tests/data/legacy/deepsets-titles.pt")
out["deepsets-titles"] = SetEncoder.from_pretrained("tests/data/legacy/deepsets-titles.pt").encode_sets(sets, titles=titles)
np.savez("tests/data/legacy/expected.npz", titles=titles, views=np.array([",".join(v) for v in views]),
         **{f"set{i}": s for i, s in enumerate(sets)}, **out)
print({k: v.shape for k, v in out.items()})
