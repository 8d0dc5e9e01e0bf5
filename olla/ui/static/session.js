// Signing in: the key is sent once to /ui/api/session and exchanged for an HttpOnly cookie; the
// page never keeps it.

import { request } from "./api.js";

const LOCAL = { user: "local", admin: true, keys: false };

/** The signed-in user, or null when the server wants a key. */
export async function currentSession() {
  try {
    return await request("GET", "/ui/api/session");
  } catch (error) {
    if (error.status === 401) return null;
    if (error.status === 404) return LOCAL; // a daemon without sessions: no keys to check
    throw error;
  }
}

export function signIn(key) {
  return request("POST", "/ui/api/session", { key });
}

export function signOut() {
  return request("DELETE", "/ui/api/session");
}
