/**
 * `node --import weir/testing/register` (or this file's path): runs a handler's tests on
 * Node.js 20 or later against weir's in-memory stand-ins (see hooks.js and `weir/testing`).
 */

import { register } from 'node:module';

register('./hooks.js', import.meta.url);
