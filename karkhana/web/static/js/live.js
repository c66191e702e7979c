// Live samples from GET /api/v1/live (Server-Sent Events); the browser reconnects by itself.
import { query } from "./api.js";

export function watch(params, onSamples, onReady) {
  const source = new EventSource(`/api/v1/live?${query(params)}`);
  source.addEventListener("samples", (e) => onSamples(JSON.parse(e.data)));
  if (onReady) source.addEventListener("ready", (e) => onReady(JSON.parse(e.data)));
  return () => source.close();
}
