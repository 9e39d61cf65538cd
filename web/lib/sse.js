// Server-Sent Events read from a fetch Response (EventSource can neither POST nor send the bearer
// header). Only `data:` lines matter to us; each event is one JSON object.

/** Calls `onEvent(object)` for each event of `response`'s body until it ends; rejects with an
 *  AbortError when the fetch's signal aborts it. */
export async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const flush = (block) => {
    const data = block.split(/\r?\n/).filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(line[5] === " " ? 6 : 5)).join("\n");
    if (!data) return;
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return; // not ours to understand
    }
    onEvent(event);
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        flush(buffer.slice(0, end));
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      }
    }
    buffer += decoder.decode();
    if (buffer.trim()) flush(buffer);
  } finally {
    try {
      reader.releaseLock();
    } catch {
      // a read was still pending (an abort): the stream is errored anyway
    }
  }
}
