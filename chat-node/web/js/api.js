// The REST client: requests under /v1 with the session's token, errors as ApiError
// ({code, message, status} as the protocol answers them), uploads straight to the signed
// URL that POST /v1/media gives, and GET /v1/limits. No DOM, no state of its own.

/** An error a person can read: the protocol's code and message, the HTTP status (0: none). */
export class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

/**
 * A client for the node that served the page.
 * token(): the bearer token or null; onUnauthorized(): a 401 outside /auth/ (the session ended).
 */
export function createApi({ token, onUnauthorized, fetchImpl = (...a) => fetch(...a) }) {
  /** `method path` with an optional JSON body; resolves to the parsed answer (or null). */
  async function request(method, path, body) {
    const headers = {};
    const bearer = token();
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetchImpl(`/v1${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError('unavailable', 'Cannot reach the server. Check your connection.', 0);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const err = data && data.error;
      const e = new ApiError(
        (err && err.code) || 'internal',
        (err && err.message) || `The server answered ${res.status} ${res.statusText}`.trim(),
        res.status,
      );
      if (res.status === 401 && token() && !path.startsWith('/auth/')) onUnauthorized();
      throw e;
    }
    return data;
  }

  /** Announces a file (POST /v1/media), PUTs its bytes to the signed URL; the Attachment. */
  async function upload(file) {
    const contentType = file.type || 'application/octet-stream';
    const r = await request('POST', '/media', {
      filename: file.name || 'file',
      content_type: contentType,
      size: file.size,
    });
    if (!r || !r.attachment) throw new Error('The server did not return an attachment');
    const up = r.upload;
    if (up && up.url) {
      let res;
      try {
        res = await fetchImpl(up.url, { method: up.method || 'PUT', headers: up.headers || {}, body: file });
      } catch {
        throw new Error('Could not reach the upload server');
      }
      if (!res.ok) {
        let msg = `upload answered ${res.status}`;
        try {
          const answer = await res.json();
          if (answer && answer.error && answer.error.message) msg = answer.error.message;
        } catch {
          /* not JSON (S3 answers XML) */
        }
        throw new Error(msg);
      }
    }
    return r.attachment;
  }

  /** The node's limits (GET /v1/limits, no token needed). */
  const limits = () => request('GET', '/limits');

  return { request, upload, limits };
}
