/**
 * A test guest that tries to reach the outside with `fetch` (the configuration's `url`), built
 * with componentize-js's wasi:http (`build.mjs --with-http`). weir refuses every wasi:http call,
 * so the call fails before a connection is made.
 */

import * as weir from 'weir';

class Fetch {
  /** @param {weir.Config} config */
  constructor(config) {
    this.url = config.get('url', 'http://127.0.0.1:9/');
  }

  handle() {
    fetch(this.url).then(
      (response) => weir.info(`fetched ${response.status}`),
      (error) => weir.info(`refused: ${error}`),
    );
    return weir.ack();
  }
}

export const { init, handle } = weir.handler(Fetch);
