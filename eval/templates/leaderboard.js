(function(){var ts=document.querySelectorAll('table.board');
function val(td){var v=td.getAttribute('data-value');return v===''||v===null?null:parseFloat(v);}
function col(t,key){var hs=t.tHead.rows[0].cells;for(var i=0;i<hs.length;i++){if(hs[i].getAttribute('data-key')===key)return i;}return -1;}
function sortBy(t,key,dir){var k=col(t,key);if(k<0)return;var rows=Array.prototype.slice.call(t.tBodies[0].rows);
rows.sort(function(a,b){var x=val(a.cells[k]),y=val(b.cells[k]);if(x===null&&y===null)return 0;
if(x===null)return 1;if(y===null)return -1;return dir==='asc'?x-y:y-x;});
rows.forEach(function(r){t.tBodies[0].appendChild(r);});t.setAttribute('data-sorted',key+':'+dir);}
Array.prototype.forEach.call(ts,function(t){var hs=t.tHead.rows[0].cells;for(var i=0;i<hs.length;i++){
hs[i].addEventListener('click',function(){var key=this.getAttribute('data-key');
var cur=t.getAttribute('data-sorted')||'';sortBy(t,key,cur===key+':desc'?'asc':'desc');});}});
var m=/sort=([^&]+)(?:&dir=(asc|desc))?/.exec(decodeURIComponent(location.hash||''));
if(m)Array.prototype.forEach.call(ts,function(t){sortBy(t,m[1],m[2]||'desc');});})();
