// One place that binds htm to Preact, so components import `html` and the hooks from here.
import { h, render, Fragment, createContext } from "../vendor/preact.module.js";
import htm from "../vendor/htm.module.js";

export const html = htm.bind(h);
export { render, Fragment, createContext };
export {
  useState, useEffect, useRef, useMemo, useCallback, useContext, useReducer, useLayoutEffect,
} from "../vendor/hooks.module.js";
