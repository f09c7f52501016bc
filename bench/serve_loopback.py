"""Requests/s of practice_jax.serve on loopback: N single-image PNG requests (real MNIST
test images), sequential on one keep-alive connection, then from 4 client threads.

    TFDS_DATA_DIR=... python bench/serve_loopback.py WORKDIR 2000
"""
import http.client, io, json, re, subprocess, sys, threading, time
import numpy as np, tensorflow_datasets as tfds
from PIL import Image
workdir, n = sys.argv[1], int(sys.argv[2])
data = tfds.load("mnist", split=f"test[:{n}]", batch_size=-1, download=False)
images, labels = np.asarray(data["image"]), np.asarray(data["label"])
def png(a):
  b = io.BytesIO(); Image.fromarray(a[..., 0]).save(b, "PNG"); return b.getvalue()
bodies = [png(a) for a in images]
server = subprocess.Popen([sys.executable, "-m", "practice_jax.serve", f"--workdir={workdir}",
                           "--port=0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = server.stdout.readline(); print(line.strip())
host, port = re.search(r"http://([\d.]+):(\d+)", line).groups()
def client(indices, out):
  c = http.client.HTTPConnection(host, int(port), timeout=60)
  for i in indices:
    c.request("POST", "/predict", bodies[i], {"Content-Type": "image/png"})
    r = c.getresponse(); a = json.loads(r.read()); assert r.status == 200, a
    out[i] = a["predictions"][0]["top"][0]["index"]
  c.close()
try:
  out = {}
  client(range(20), out)                     # warm up
  for threads in (1, 4):
    out = {}
    start = time.perf_counter()
    ts = [threading.Thread(target=client, args=(range(k, n, threads), out)) for k in range(threads)]
    [t.start() for t in ts]; [t.join() for t in ts]
    wall = time.perf_counter() - start
    acc = np.mean([out[i] == labels[i] for i in range(n)])
    print(f"{threads} client(s): {n} requests in {wall:.2f} s = {n / wall:.0f} requests/s, "
          f"{1e3 * wall / n * threads:.2f} ms per request per client; accuracy of answers {acc:.4f}")
finally:
  server.terminate(); server.wait()
