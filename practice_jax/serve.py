"""Serve a trained image classifier over HTTP (Python's standard library only):

    python -m practice_jax.serve --workdir=runs/mnist [--port=8000] [--host=127.0.0.1]

    curl -s --data-binary @digit.png -H 'Content-Type: image/png' localhost:8000/predict
    curl -s -d '{"images": [[0, 0, ..., 0]]}' -H 'Content-Type: application/json' \\
        localhost:8000/predict?top=5

- ``POST /predict``: the body is one image file (PNG, JPEG, anything Pillow reads;
  ``Content-Type: image/*`` or ``application/octet-stream``), or JSON ``{"images": [...]}``
  whose items are images as nested lists (HxWxC, or HxW for one channel) or flat rows of
  H*W*C pixel values 0-255, at most ``--max_images``. The answer is JSON:
  ``{"predictions": [{"top": [{"class", "index", "probability"}, ...], "probabilities":
  [...]}, ...]}``, the top ``?top=K`` classes (default 3) and every class's probability.
  An image file is prepared as ``predict`` prepares it: converted to the model's channels,
  inverted if it is dark ink on light paper (``?invert=auto|yes|no``), and with
  ``?resize=1`` brought to the model's size (MNIST-style framing for one-channel
  images); without it an image of another size is refused. JSON images are taken as
  they are (model size, already light on dark).
- ``GET /health``: ``{"status": "ok"}``; ``GET /metadata``: class names, input shape,
  limits, the run and its step.

Bad requests are answered with a 4xx status and JSON ``{"error": "one sentence"}``: 400
(not an image, wrong size, bad JSON or values), 404 (unknown path), 405 (wrong method),
411 (no Content-Length), 413 (body over ``--max_bytes``, or an image over
``--max_pixels`` pixels: a decompression bomb is refused before it is decoded), 415
(another Content-Type), 503 (``--max_concurrent`` predictions already running; retry).
The model is compiled once at start for one image and for a batch of ``--max_images``
(other requests are padded to it), so no request compiles anything.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from absl import app, flags, logging

from practice_jax import quiet
from practice_jax.errors import UserError

ROUTES = {"/predict": "POST", "/health": "GET", "/metadata": "GET"}


class RequestError(Exception):
  """A bad request: its HTTP status and one sentence for the client."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


class Model:
  """A run's classifier compiled at start for batches of 1 and `max_images`:
  `probabilities(images)` pads and splits to those, so no call compiles again."""

  def __init__(self, workdir: str, checkpoint: str | None = None, max_images: int = 32):
    import jax

    from practice_jax import train
    exp, state, step, which = train.load_trained(workdir, checkpoint)
    if exp.config.task.name != "classification" or exp.config.data.name == "csv":
      raise UserError(f"{workdir} holds a {exp.config.task.name} run on "
                      f"{exp.config.data.name}; serve takes image classifiers only.")
    self.workdir, self.step, self.which = workdir, int(step), which
    self.dataset = exp.config.data.name
    self.fit = exp.config.data.get("fit", "crop")       # an image folder's, as trained
    self.shape = tuple(exp.task.image_shape)
    self.class_names = list(exp.task.class_names)
    self.max_images = max_images
    host_state = jax.device_get(state)
    probabilities = jax.jit(
        lambda images: jax.nn.softmax(exp.task.logits(host_state, images), axis=-1))
    # Compiled here, once, for a single image (the common request) and for a full batch
    # (anything else is padded to it): no request compiles.
    self._compiled = {n: probabilities.lower(
        jax.ShapeDtypeStruct((n,) + self.shape, np.uint8)).compile()
        for n in sorted({1, max_images})}

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    if len(images) == 1:
      return np.asarray(self._compiled[1](images))
    out = []
    for i in range(0, len(images), self.max_images):
      chunk = images[i:i + self.max_images]
      padded = np.zeros((self.max_images,) + self.shape, np.uint8)
      padded[:len(chunk)] = chunk
      out.append(np.asarray(self._compiled[self.max_images](padded))[:len(chunk)])
    return np.concatenate(out)

  def metadata(self) -> dict:
    return {"workdir": self.workdir, "checkpoint": self.which, "step": self.step,
            "dataset": self.dataset, "class_names": self.class_names,
            "input": {"shape": list(self.shape), "dtype": "uint8", "range": [0, 255]}}


def decode_image(body: bytes, channels: int, max_pixels: int) -> np.ndarray:
  """An image file's bytes as uint8 HWC with `channels` channels (transparent pixels
  become white paper, as in data/images.read_image); RequestError if it is not an image
  or has more than `max_pixels` pixels (checked from its header, before decoding)."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(io.BytesIO(body)) as image:
      width, height = image.size
      if width * height > max_pixels:
        raise RequestError(413, f"The image is {width}x{height} pixels, more than the "
                                f"{max_pixels} pixels this server decodes.")
      if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, image)
      array = np.asarray(image.convert("L" if channels == 1 else "RGB"), np.uint8)
  except Image.DecompressionBombError:
    raise RequestError(413, f"The image has more than the {max_pixels} pixels this server "
                            f"decodes.") from None
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
    raise RequestError(400, "The body is not a readable image (PNG, JPEG, ...).") from None
  return array.reshape(array.shape[:2] + (channels,))


def prepare_file_image(image: np.ndarray, model: Model, invert: str, resize: bool
                       ) -> np.ndarray:
  """As predict prepares an image file for the model (see the module docstring)."""
  from practice_jax.data.images import fit_image
  from practice_jax.predict import to_model_input
  height, width, _ = model.shape
  if model.dataset == "image_folder":      # trained on any sizes, brought to its own
    if invert == "yes":
      image = 255 - image
    return (image if image.shape[:2] == (height, width) else
            fit_image(image, height, width, model.fit))
  if image.shape[:2] != (height, width) and not resize:
    raise RequestError(400, f"The image is {image.shape[1]}x{image.shape[0]} pixels but "
                            f"the model takes {width}x{height}; add ?resize=1 to fit it.")
  return to_model_input(image, model.shape, invert, resize, "the image", model.dataset)[0]


def json_images(body: bytes, model: Model) -> np.ndarray:
  """{"images": [...]} as uint8 [n, H, W, C] (see the module docstring)."""
  try:
    payload = json.loads(body)
  except (ValueError, UnicodeDecodeError):
    raise RequestError(400, "The body is not valid JSON.") from None
  if not isinstance(payload, dict) or not isinstance(payload.get("images"), list) \
      or not payload["images"]:
    raise RequestError(400, 'The JSON must be an object {"images": [...]} holding at '
                            'least one image.')
  images = payload["images"]
  if len(images) > model.max_images:
    raise RequestError(413, f"{len(images)} images in one request; at most "
                            f"{model.max_images}.")
  height, width, channels = model.shape
  size = height * width * channels
  shapes = [(height, width, channels), (size,)] + ([(height, width)] if channels == 1 else [])
  out = np.zeros((len(images),) + model.shape, np.uint8)
  for i, image in enumerate(images):
    try:
      array = np.asarray(image, np.float64)
    except (ValueError, TypeError):
      raise RequestError(400, f"Image {i} is not a nested list of numbers of one "
                              f"shape.") from None
    if array.shape not in shapes:
      raise RequestError(400, f"Each image must be {height}x{width}x{channels} pixel "
                              f"values (or a row of {size}); image {i} has shape "
                              f"{list(array.shape)}.")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
      raise RequestError(400, f"Pixel values must be numbers from 0 to 255 (image {i}).")
    out[i] = np.rint(array).astype(np.uint8).reshape(model.shape)
  return out


def answer(probabilities: np.ndarray, names: list[str], top: int) -> dict:
  predictions = []
  for p in probabilities:
    best = np.argsort(-p)[:top]
    predictions.append({
        "top": [{"class": names[i], "index": int(i), "probability": float(p[i])}
                for i in best],
        "probabilities": [float(q) for q in p]})
  return {"predictions": predictions}


def make_handler(model: Model, max_bytes: int, max_pixels: int, max_concurrent: int):
  slots = threading.BoundedSemaphore(max_concurrent)

  class Handler(BaseHTTPRequestHandler):
    server_version = "practice_jax"
    protocol_version = "HTTP/1.1"
    timeout = 30                              # seconds a client may take to send
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold the second for ~40 ms on a keep-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):     # one line per request on stderr
      sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
      body = json.dumps(payload).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(body)))
      for key, value in (headers or {}).items():
        self.send_header(key, value)
      self.end_headers()
      self.wfile.write(body)

    def _route(self, method: str) -> None:
      path = urllib.parse.urlsplit(self.path).path
      try:
        if path not in ROUTES:
          raise RequestError(404, f"No {path}; the paths are {', '.join(ROUTES)}.")
        if ROUTES[path] != method:
          self.close_connection = True        # its body, if any, is left unread
          self._send(405, {"error": f"{path} takes {ROUTES[path]}, not {method}."},
                     {"Allow": ROUTES[path]})
          return
        if path == "/health":
          self._send(200, {"status": "ok"})
        elif path == "/metadata":
          self._send(200, dict(model.metadata(), limits={
              "max_bytes": max_bytes, "max_pixels": max_pixels,
              "max_images": model.max_images, "max_concurrent": max_concurrent}))
        else:
          self._predict()
      except (RequestError, UserError) as e:
        status = getattr(e, "status", 400)
        self.close_connection = True          # a body may be left unread
        self._send(status, {"error": str(e)},
                   {"Retry-After": "1"} if status == 503 else None)
      except Exception as e:                  # the server keeps serving; the log says why
        logging.exception("Error answering %s %s", method, self.path)
        self._send(500, {"error": f"Internal error ({type(e).__name__}); the request was "
                                  f"not answered."})

    def _predict(self) -> None:
      query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
      length = self.headers.get("Content-Length")
      if length is None:
        self.close_connection = True
        raise RequestError(411, "A Content-Length header is required.")
      try:
        length = int(length)
        if length < 0:
          raise ValueError
      except ValueError:
        self.close_connection = True
        raise RequestError(400, "The Content-Length header is not a size.") from None
      if length > max_bytes:
        self.close_connection = True          # the body is not read
        raise RequestError(413, f"The body is {length} bytes; at most {max_bytes}.")
      if length == 0:
        raise RequestError(400, "The body is empty; send an image file or JSON images.")
      body = self.rfile.read(length)
      if len(body) < length:
        self.close_connection = True
        raise RequestError(400, "The body ended before Content-Length bytes.")
      top = _query_int(query, "top", 3, 1, len(model.class_names))
      invert = query.get("invert", ["auto"])[-1]
      if invert not in ("auto", "yes", "no"):
        raise RequestError(400, "invert must be auto, yes or no.")
      resize = query.get("resize", ["0"])[-1].lower() in ("1", "true", "yes")
      kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
      if kind == "application/json":
        images = json_images(body, model)
      elif kind.startswith("image/") or kind in ("application/octet-stream", ""):
        image = decode_image(body, model.shape[-1], max_pixels)
        images = prepare_file_image(image, model, invert, resize)[None]
      else:
        raise RequestError(415, f"Content-Type {kind} is not taken; send image/* or "
                                f"application/json.")
      if not slots.acquire(blocking=False):
        raise RequestError(503, f"{max_concurrent} predictions are already running; "
                                f"retry shortly.")
      try:
        probabilities = model.probabilities(images)
      finally:
        slots.release()
      self._send(200, answer(probabilities, model.class_names, top))

    def do_GET(self):
      self._route("GET")

    def do_POST(self):
      self._route("POST")

    def do_PUT(self):
      self._route("PUT")

    def do_DELETE(self):
      self._route("DELETE")

    def do_PATCH(self):
      self._route("PATCH")

  return Handler


def _query_int(query: dict, key: str, default: int, low: int, high: int) -> int:
  value = query.get(key, [str(default)])[-1]
  try:
    number = int(value)
  except ValueError:
    raise RequestError(400, f"{key} must be a whole number, not {value!r}.") from None
  return min(max(number, low), high)


def make_server(model: Model, host: str = "127.0.0.1", port: int = 0,
                max_bytes: int = 5 * 2**20, max_pixels: int = 4096 * 4096,
                max_concurrent: int = 4) -> ThreadingHTTPServer:
  """The server (not yet serving; call serve_forever); port 0 picks a free port."""
  server = ThreadingHTTPServer(
      (host, port), make_handler(model, max_bytes, max_pixels, max_concurrent))
  server.daemon_threads = True
  return server


def define_flags() -> None:
  """The command's flags, defined only when it runs. --workdir and --checkpoint are
  predict's (serve prepares image files with predict's functions, and importing predict
  defines them)."""
  from practice_jax import predict  # noqa: F401  (defines --workdir and --checkpoint)
  flags.declare_key_flag("workdir")
  flags.declare_key_flag("checkpoint")
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
  flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free port).", lower_bound=0)
  flags.DEFINE_integer("max_bytes", 5 * 2**20, "Largest request body, in bytes.",
                       lower_bound=1)
  flags.DEFINE_integer("max_pixels", 4096 * 4096, "Largest image decoded (width x "
                       "height); larger ones are refused before decoding.", lower_bound=1)
  flags.DEFINE_integer("max_images", 32, "Most images in one request (the compiled batch "
                       "size).", lower_bound=1)
  flags.DEFINE_integer("max_concurrent", 4, "Most predictions running at once; more are "
                       "answered 503.", lower_bound=1)


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}; see --help.", file=sys.stderr)
    return 2
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  FLAGS = flags.FLAGS
  from PIL import Image
  # Pillow's own guard (it raises DecompressionBombError past twice this), a second line
  # behind decode_image's header check; set for this process only (not in make_server).
  Image.MAX_IMAGE_PIXELS = FLAGS.max_pixels
  try:
    model = Model(FLAGS.workdir, FLAGS.checkpoint, FLAGS.max_images)
    server = make_server(model, FLAGS.host, FLAGS.port, FLAGS.max_bytes,
                         FLAGS.max_pixels, FLAGS.max_concurrent)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"error: cannot listen on {FLAGS.host}:{FLAGS.port} ({e.strerror}).",
          file=sys.stderr)
    return 2
  host, port = server.server_address[:2]
  print(f"Serving {FLAGS.workdir} (step {model.step}) on http://{host}:{port}: "
        f"POST /predict, GET /health, GET /metadata. Ctrl-C stops.", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
  return 0


if __name__ == "__main__":
  quiet.install()   # before TensorFlow or XLA load; --verbosity shows their lines
  define_flags()
  app.run(main)
