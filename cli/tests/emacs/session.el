;;; session.el --- an eglot session against `weir lsp' -*- lexical-binding: t -*-
;; Run by cli/tests/lsp_emacs.rs as
;;   emacs --batch -q --eval '(package-initialize)' -l init.el -l session.el
;; in a directory holding main.weir, lib.weir and other.weir, where init.el
;; is docs/editors.md's eglot setup. Writes one `key: value' line per check
;; to $WEIR_EMACS_OUT. Every wait is bounded.

(defun weir-wait (pred)
  "Process output until PRED holds or 20 seconds pass."
  (let ((deadline (+ (float-time) 20)))
    (while (and (not (funcall pred)) (< (float-time) deadline))
      (accept-process-output nil 0.05))
    (funcall pred)))

(defvar weir-out nil)
(defun weir-put (key value) (push (format "%s: %S" key value) weir-out))

(condition-case err
    (progn
      (find-file "main.weir")
      (weir-put "mode" major-mode)
      ;; eglot-ensure starts the server after the command: no command loop
      ;; in batch mode, so run the hook it waits for.
      (run-hooks 'post-command-hook)
      (weir-wait #'eglot-current-server)
      (weir-put "hover-capable" (and (eglot--server-capable :hoverProvider) t))
      (goto-char (point-min))
      (search-forward "from web")
      (insert "b")
      (eglot--signal-textDocument/didChange)
      (weir-wait #'flymake-diagnostics)
      (weir-put "diagnostic" (mapcar (lambda (d) (car (split-string (flymake-diagnostic-text d) "\n")))
                                     (flymake-diagnostics)))
      (delete-char -1)
      (eglot--signal-textDocument/didChange)
      (weir-put "cleared" (weir-wait (lambda () (null (flymake-diagnostics)))))
      (goto-char (point-min))
      (search-forward "from w")
      (let* ((server (eglot-current-server))
             (hover (jsonrpc-request server :textDocument/hover
                                     (eglot--TextDocumentPositionParams)))
             (refs (jsonrpc-request server :textDocument/references
                                    (append (eglot--TextDocumentPositionParams)
                                            '(:context (:includeDeclaration t))))))
        (weir-put "hover" (plist-get (plist-get hover :contents) :value))
        (weir-put "references" (sort (mapcar (lambda (l) (file-name-nondirectory (plist-get l :uri)))
                                             refs)
                                     #'string<)))
      (goto-char (point-min))
      (search-forward "  applies")
      (beginning-of-line)
      (insert "    ")
      (eglot-format-buffer)
      (weir-put "formatted" (buffer-substring-no-properties (point-min) (point-max)))
      (eglot-shutdown (eglot-current-server)))
  (error (weir-put "error" err)))
(with-temp-file (getenv "WEIR_EMACS_OUT")
  (insert (mapconcat #'identity (nreverse weir-out) "\n") "\n"))
(kill-emacs 0)
