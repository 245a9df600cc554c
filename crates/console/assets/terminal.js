// A small terminal for `exec` with a TTY: enough of VT100 for a shell
// (cursor movement, erase, carriage return, backspace); colours are
// dropped. Keys typed while it has focus are sent as the bytes a terminal
// would send; Tab is left to the browser so keyboard users can move on.

import { h } from './dom.js';

const SCROLLBACK = 2000;

export class Terminal {
  constructor({ cols = 100, rows = 24, label = 'Terminal', onData }) {
    this.cols = cols;
    this.rows = rows;
    this.onData = onData;
    this.lines = [''];
    this.row = 0;
    this.col = 0;
    this.pending = '';
    this.el = h('pre', { class: 'terminal', tabindex: 0, role: 'textbox', 'aria-multiline': 'true', 'aria-label': label, id: 'terminal' });
    this.el.addEventListener('keydown', (e) => this.key(e));
    this.el.addEventListener('paste', (e) => { e.preventDefault(); this.send(e.clipboardData.getData('text')); });
    this.scheduled = false;
  }

  send(s) { if (this.onData && s) this.onData(s); }

  key(e) {
    if (e.key === 'Tab' || e.metaKey) return;
    const map = {
      Enter: '\r', Backspace: '\x7f', Escape: '\x1b', ArrowUp: '\x1b[A', ArrowDown: '\x1b[B',
      ArrowRight: '\x1b[C', ArrowLeft: '\x1b[D', Home: '\x1b[H', End: '\x1b[F', Delete: '\x1b[3~',
    };
    let s = map[e.key];
    if (!s && e.ctrlKey && e.key.length === 1) {
      const c = e.key.toUpperCase().charCodeAt(0);
      if (c >= 64 && c <= 95) s = String.fromCharCode(c - 64);
    }
    if (!s && !e.ctrlKey && !e.altKey && e.key.length === 1) s = e.key;
    if (s) { e.preventDefault(); this.send(s); }
  }

  line() { while (this.lines.length <= this.row) this.lines.push(''); return this.lines[this.row]; }
  put(ch) {
    if (this.col >= this.cols) { this.col = 0; this.newline(); }
    const l = this.line().padEnd(this.col, ' ');
    this.lines[this.row] = l.slice(0, this.col) + ch + l.slice(this.col + 1);
    this.col++;
  }
  newline() {
    this.row++;
    this.line();
    if (this.lines.length > SCROLLBACK) { const drop = this.lines.length - SCROLLBACK; this.lines.splice(0, drop); this.row -= drop; }
  }
  // The top of the screen, in lines: cursor addressing is relative to it.
  top() { return Math.max(0, this.lines.length - this.rows); }

  csi(params, final) {
    const n = params.split(';').map((x) => parseInt(x.replace(/^\?/, ''), 10));
    const a = Number.isNaN(n[0]) ? 1 : n[0];
    const l = this.line();
    switch (final) {
      case 'K': {
        const mode = Number.isNaN(n[0]) ? 0 : n[0];
        if (mode === 0) this.lines[this.row] = l.slice(0, this.col);
        else if (mode === 1) this.lines[this.row] = ' '.repeat(this.col) + l.slice(this.col);
        else this.lines[this.row] = '';
        break;
      }
      case 'J':
        if (n[0] === 2 || n[0] === 3) { this.lines = ['']; this.row = 0; this.col = 0; } else { this.lines[this.row] = l.slice(0, this.col); this.lines.length = this.row + 1; }
        break;
      case 'H': case 'f': {
        const r = Number.isNaN(n[0]) ? 1 : n[0];
        const c = Number.isNaN(n[1]) ? 1 : n[1];
        this.row = this.top() + r - 1; this.col = c - 1; this.line();
        break;
      }
      case 'A': this.row = Math.max(this.top(), this.row - a); break;
      case 'B': this.row += a; this.line(); break;
      case 'C': this.col = Math.min(this.cols - 1, this.col + a); break;
      case 'D': this.col = Math.max(0, this.col - a); break;
      case 'G': this.col = a - 1; break;
      case 'P': this.lines[this.row] = l.slice(0, this.col) + l.slice(this.col + a); break;
      case '@': this.lines[this.row] = l.slice(0, this.col) + ' '.repeat(a) + l.slice(this.col); break;
      default: break; // colours, modes: not drawn
    }
  }

  write(text) {
    let s = this.pending + text;
    this.pending = '';
    let i = 0;
    while (i < s.length) {
      const ch = s[i];
      if (ch === '\x1b') {
        const rest = s.slice(i);
        let m = rest.match(/^\x1b\[([0-9;?]*)([@-~])/);
        if (m) { this.csi(m[1], m[2]); i += m[0].length; continue; }
        m = rest.match(/^\x1b\][^\x07\x1b]*(\x07|\x1b\\)/);
        if (m) { i += m[0].length; continue; }
        m = rest.match(/^\x1b[()][0-9A-Za-z]/) || rest.match(/^\x1b[=>78cDEMZ]/);
        if (m) { i += m[0].length; continue; }
        if (rest.length < 16) { this.pending = rest; break; } // an escape split across messages
        i++; continue;
      }
      if (ch === '\r') this.col = 0;
      else if (ch === '\n') this.newline();
      else if (ch === '\b') this.col = Math.max(0, this.col - 1);
      else if (ch === '\t') this.col = Math.min(this.cols - 1, (Math.floor(this.col / 8) + 1) * 8);
      else if (ch >= ' ' && ch !== '\x7f') this.put(ch);
      i++;
    }
    this.draw();
  }

  // The visible text (tests and screen readers read it).
  text() { return this.lines.map((l) => l.replace(/\s+$/, '')).join('\n'); }

  draw() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      const before = this.lines.slice(0, this.row).join('\n');
      const cur = this.line();
      const nl = this.row > 0 ? '\n' : '';
      const after = this.lines.slice(this.row + 1).join('\n');
      this.el.replaceChildren(
        document.createTextNode(before + nl + cur.slice(0, this.col)),
        h('span', { class: 'cursor' }, cur[this.col] || ' '),
        document.createTextNode(cur.slice(this.col + 1) + (after ? '\n' + after : '')));
      this.el.scrollTop = this.el.scrollHeight;
    });
  }
}
