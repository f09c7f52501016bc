"""The prediction server (practice_jax/serve.py) on loopback: good requests answer class
probabilities that match the model; each bad request gets its 4xx status and one
sentence (no traceback), and the server keeps serving."""

from __future__ import annotations

import http.client
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from practice_jax import serve
from test_export import real_mnist_test_images, shared_run

MAX_BYTES = 64 * 1024
MAX_PIXELS = 512 * 512


@pytest.fixture(scope="module")
def real_images(mnist_files):
  return real_mnist_test_images(mnist_files, 8)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  return serve.Model(shared_run(tmp_path_factory), max_images=4)


def start(model, **limits):
  server = serve.make_server(model, "127.0.0.1", 0, **limits)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return server


@pytest.fixture(scope="module")
def server(model):
  server = start(model, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, max_concurrent=2)
  yield server
  server.shutdown()
  server.server_close()


def request(server, method, path, body=None, content_type=None, headers=None):
  """(status, JSON answer) of one request on a new connection."""
  connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
  try:
    headers = dict(headers or {})
    if content_type:
      headers["Content-Type"] = content_type
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read())
  finally:
    connection.close()


def png(array: np.ndarray) -> bytes:
  out = io.BytesIO()
  Image.fromarray(array.squeeze(-1) if array.ndim == 3 else array).save(out, "PNG")
  return out.getvalue()


def assert_one_sentence(answer):
  assert set(answer) == {"error"}
  message = answer["error"]
  assert message.endswith(".") and "\n" not in message and "Traceback" not in message


def test_health_and_metadata(server):
  assert request(server, "GET", "/health") == (200, {"status": "ok"})
  status, meta = request(server, "GET", "/metadata")
  assert status == 200 and meta["class_names"] == [str(i) for i in range(10)]
  assert meta["input"]["shape"] == [28, 28, 1] and meta["limits"]["max_bytes"] == MAX_BYTES


def test_png_images_get_the_models_probabilities(server, model, real_images):
  expected = model.probabilities(real_images)
  for image, p in zip(real_images, expected):          # a bounded loop of requests
    status, answer = request(server, "POST", "/predict?top=2", png(image), "image/png")
    assert status == 200
    (prediction,) = answer["predictions"]
    probabilities = np.array(prediction["probabilities"])
    assert probabilities.shape == (10,) and abs(probabilities.sum() - 1) < 1e-5
    np.testing.assert_allclose(probabilities, p, atol=1e-6)
    assert len(prediction["top"]) == 2
    assert prediction["top"][0]["index"] == int(p.argmax())
    assert prediction["top"][0]["class"] == str(int(p.argmax()))


def test_json_images_and_rows(server, model, real_images):
  images = real_images[:3]
  body = json.dumps({"images": [images[0].tolist(), images[1].ravel().tolist(),
                                images[2][..., 0].tolist()]})
  status, answer = request(server, "POST", "/predict", body, "application/json")
  assert status == 200
  got = np.array([p["probabilities"] for p in answer["predictions"]])
  np.testing.assert_allclose(got, model.probabilities(images), atol=1e-6)


def test_a_drawing_of_another_size_needs_resize(server):
  drawing = np.full((90, 60), 255, np.uint8)         # dark ink on white paper
  drawing[10:80, 28:34] = 0
  status, answer = request(server, "POST", "/predict", png(drawing), "image/png")
  assert status == 400 and "60x90 pixels but the model takes 28x28" in answer["error"]
  assert_one_sentence(answer)
  status, answer = request(server, "POST", "/predict?resize=1", png(drawing), "image/png")
  assert status == 200 and len(answer["predictions"]) == 1


@pytest.mark.parametrize("body, content_type, status, words", [
    (b"\x89PNG but not really", "image/png", 400, "not a readable image"),
    (b"", "image/png", 400, "body is empty"),
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b'{"images": [[1, 2, 3]]}', "application/json", 400, "Each image must be 28x28x1"),
    (json.dumps({"images": [[300] * 784]}).encode(), "application/json", 400, "0 to 255"),
    (json.dumps({"images": [[0] * 784] * 5}).encode(), "application/json", 413,
     "at most 4"),
    (b"hello", "text/plain", 415, "not taken"),
    (b"x" * (MAX_BYTES + 1), "image/png", 413, f"at most {MAX_BYTES}"),
])
def test_bad_requests_get_a_4xx_and_one_sentence(server, body, content_type, status, words):
  got, answer = request(server, "POST", "/predict", body, content_type)
  assert got == status and words in answer["error"]
  assert_one_sentence(answer)
  assert request(server, "GET", "/health")[0] == 200     # and the server keeps serving


def test_a_decompression_bomb_is_refused_before_decoding(server):
  bomb = io.BytesIO()
  Image.new("1", (4000, 4000)).save(bomb, "PNG")         # 16M pixels in a few kB
  assert len(bomb.getvalue()) < MAX_BYTES
  status, answer = request(server, "POST", "/predict", bomb.getvalue(), "image/png")
  assert status == 413 and f"than the {MAX_PIXELS} pixels" in answer["error"]
  assert_one_sentence(answer)


def test_wrong_paths_and_methods(server):
  status, answer = request(server, "GET", "/nowhere")
  assert status == 404 and "/predict" in answer["error"]
  status, answer = request(server, "GET", "/predict")
  assert status == 405 and answer == {"error": "/predict takes POST, not GET."}
  status, answer = request(server, "DELETE", "/health")
  assert status == 405
  assert_one_sentence(answer)


def test_too_many_concurrent_predictions_get_503(model, real_images, monkeypatch):
  entered, release = threading.Event(), threading.Event()
  compute = model.probabilities

  def slow(images):
    entered.set()
    release.wait(30)
    return compute(images)
  server = start(model, max_concurrent=1)
  try:
    monkeypatch.setattr(model, "probabilities", slow)
    first = {}
    thread = threading.Thread(target=lambda: first.update(answer=request(
        server, "POST", "/predict", png(real_images[0]), "image/png")))
    thread.start()
    assert entered.wait(30)                 # the first holds the only slot
    status, answer = request(server, "POST", "/predict", png(real_images[1]), "image/png")
    assert status == 503 and "retry" in answer["error"]
    release.set()
    thread.join(30)
    assert first["answer"][0] == 200
  finally:
    release.set()
    server.shutdown()
    server.server_close()


def test_the_command_serves_on_an_ephemeral_port(tmp_path_factory, real_images):
  import re
  import subprocess
  import sys

  from conftest import REPO
  process = subprocess.Popen(
      [sys.executable, "-m", "practice_jax.serve", f"--workdir={shared_run(tmp_path_factory)}",
       "--port=0", "--max_pixels=1000"],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    line = process.stdout.readline()
    address = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert address, line

    class Address:                        # what `request` needs of a server
      server_address = ("127.0.0.1", int(address.group(1)))
    assert request(Address, "GET", "/health") == (200, {"status": "ok"})
    status, answer = request(Address, "POST", "/predict", png(real_images[0]), "image/png")
    assert status == 200 and len(answer["predictions"][0]["probabilities"]) == 10
    status, answer = request(Address, "POST", "/predict", png(np.zeros((40, 40), np.uint8)),
                             "image/png")
    assert status == 413 and "more than the 1000 pixels" in answer["error"]
  finally:
    process.terminate()
    process.wait(30)
