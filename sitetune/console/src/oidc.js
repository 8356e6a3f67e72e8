// OIDC sign-in for a public client: the authorization code flow with PKCE (RFC 7636).
// The page redirects to the identity provider, comes back to /console?code=...&state=...,
// and exchanges the code (with the verifier only this tab knows) for an access token.
import { ApiError } from "./api.js";

const KEY = "sitetune.oidc";

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function random(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

const redirectUri = () => `${location.origin}/console`;

/** Go to the identity provider's sign-in page. */
export async function beginLogin(oidc) {
  const verifier = random(48);
  const state = random(18);
  sessionStorage.setItem(KEY, JSON.stringify({ verifier, state, hash: location.hash }));
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  const url = new URL(oidc.authorization_endpoint);
  url.search = new URLSearchParams({ response_type: "code", client_id: oidc.client_id,
    redirect_uri: redirectUri(), scope: oidc.scope, state, code_challenge: base64url(digest),
    code_challenge_method: "S256" }).toString();
  location.assign(url.toString());
}

/** On the way back from the identity provider: the access token, or null when this page
 * load is not such a return. Throws ApiError when the provider or the exchange refused. */
export async function finishLogin(oidc) {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return null;
  const saved = JSON.parse(sessionStorage.getItem(KEY) || "null");
  sessionStorage.removeItem(KEY);
  history.replaceState(null, "", `/console${saved?.hash || ""}`);
  if (params.has("error")) {
    throw new ApiError(401, params.get("error"),
      `The identity provider did not sign you in: ${params.get("error_description") || params.get("error")}`);
  }
  if (!oidc || !saved || saved.state !== params.get("state")) {
    throw new ApiError(401, "oidc_state_mismatch",
      "This sign-in answer does not belong to a sign-in started in this tab; sign in again.");
  }
  let response;
  try {
    response = await fetch(oidc.token_endpoint, { method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "authorization_code", code: params.get("code"),
        redirect_uri: redirectUri(), client_id: oidc.client_id, code_verifier: saved.verifier }) });
  } catch (error) {
    throw new ApiError(0, "oidc_unreachable", `The identity provider's token endpoint did not answer (${error.message}).`);
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok || !body.access_token) {
    throw new ApiError(401, body.error || "oidc_token_refused",
      `The identity provider did not issue a token: ${body.error_description || response.status}`);
  }
  return body.access_token;
}
