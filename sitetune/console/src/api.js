// Calls to the sitetune HTTP API with the signed-in token (API.md is the contract).
// The token lives in sessionStorage only: closing the tab signs out.

const KEY = "sitetune.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export function authHeaders() {
  return token() ? { Authorization: `Bearer ${token()}` } : {};
}

async function failure(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

/** JSON (or text / blob) from `path`; throws ApiError with the service's code and message. */
export async function request(path, { method = "GET", json, as = "json" } = {}) {
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (error) {
    throw new ApiError(0, "unreachable", `the service did not answer (${error.message})`);
  }
  if (!response.ok) throw await failure(response);
  if (as === "text") return { text: await response.text(), headers: response.headers };
  if (as === "blob") return response.blob();
  return response.json();
}

/** POST a multipart form with upload progress (`onProgress(fraction)`); resolves to JSON. */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    };
    xhr.upload.onload = () => onProgress && onProgress(1);
    xhr.onerror = () => reject(new ApiError(0, "unreachable", "the upload did not reach the service"));
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // not JSON
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else if (body && body.error) reject(new ApiError(xhr.status, body.error.code, body.error.message));
      else reject(new ApiError(xhr.status, `http_${xhr.status}`, xhr.statusText || "upload failed"));
    };
    xhr.send(form);
  });
}

/** Download a file the API serves (with the token), under `filename`. */
export async function download(path, filename) {
  const blob = await request(path, { as: "blob" });
  const url = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
