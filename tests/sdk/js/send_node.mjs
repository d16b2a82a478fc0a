// Sends calls through the real @segment/analytics-node SDK and prints what it sent, as JSON.
//
// Input (stdin, JSON): {"host": "http://127.0.0.1:PORT", "writeKey": "...", "flushAt": 15,
//                       "calls": [{"type": "track", "userId": "...", "event": "...", "properties": {...}}, ...]}
// Output (stdout, JSON): {"sent": [{"messageId", "type", "error"}], "requests": [{"url", "headers", "body"}],
//                         "errors": [...]}
// Only the host is changed from the SDK's defaults (plus flushAt, so a run makes several batches).
import { readFileSync } from 'node:fs'
import { Analytics } from '@segment/analytics-node'

const input = JSON.parse(readFileSync(0, 'utf8'))
const analytics = new Analytics({
  writeKey: input.writeKey,
  host: input.host,
  flushAt: input.flushAt ?? 15,
  maxRetries: 2,
})

const requests = []
analytics.on('http_request', (req) => {
  requests.push({ url: req.url, method: req.method, headers: req.headers, body: JSON.parse(req.body) })
})
const errors = []
analytics.on('error', (err) => errors.push(String(err.reason ?? err.code)))

// The callback runs once the SDK has delivered (or given up on) the event.
const delivered = input.calls.map(
  ({ type, ...params }) =>
    new Promise((resolve) => {
      analytics[type](params, (err, ctx) => {
        resolve({ messageId: ctx?.event?.messageId ?? null, type, error: err ? String(err) : null })
      })
    })
)
await analytics.closeAndFlush({ timeout: 30000 })
const sent = await Promise.all(delivered)
process.stdout.write(JSON.stringify({ sent, requests, errors }))
